/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Ring buffer record layouts. src/events.rs mirrors these byte for byte;
 * change both together (a unit test there checks the sizes).
 */
#ifndef FATHOM_EVENTS_H
#define FATHOM_EVENTS_H

#define MAX_CAPTURE 4096
#define MAX_FILENAME 256

enum event_kind {
	EVENT_DATA = 1,
	EVENT_CONNECT = 2,
	EVENT_ACCEPT = 3,
	EVENT_CLOSE = 4,
	EVENT_EXEC = 5,
	EVENT_EXIT = 6,
	EVENT_FORK = 7,
};

enum direction {
	DIR_EGRESS = 1,
	DIR_INGRESS = 2,
};

/*
 * Hook ids index the counters map: [hook * 2] calls, [hook * 2 + 1] events,
 * [COUNTER_FILTERED + hook] messages dropped by protocol inference.
 */
enum hook {
	HOOK_READ = 0,
	HOOK_WRITE,
	HOOK_SENDTO,
	HOOK_RECVFROM,
	HOOK_READV,
	HOOK_WRITEV,
	HOOK_SENDMSG,
	HOOK_RECVMSG,
	HOOK_CONNECT,
	HOOK_ACCEPT,
	HOOK_ACCEPT4,
	HOOK_CLOSE,
	HOOK_EXEC,
	HOOK_EXIT,
	HOOK_SSL_WRITE,
	HOOK_SSL_READ,
	HOOK_FORK,
	HOOK_SENDMMSG,
	HOOK_RECVMMSG,
	NUM_HOOKS,
};

#define COUNTER_DROPS (NUM_HOOKS * 2)
#define COUNTER_FILTERED (NUM_HOOKS * 2 + 1)
#define NUM_COUNTERS (NUM_HOOKS * 3 + 1)

/* Socket data (EVENT_DATA) and socket lifecycle (CONNECT/ACCEPT/CLOSE). */
struct socket_event {
	__u32 kind;
	__u32 pid;
	__u32 tid;
	__s32 fd;
	__u64 ts_ns;
	__u64 syscall_trace_id;
	__u64 syscall_len;
	__u32 tcp_seq;
	__u32 cap_len;
	__u16 family;
	__u16 sport; /* host byte order; src is the sender of the bytes */
	__u16 dport;
	__u8 l4_proto;
	__u8 direction;
	__u8 hook;
	__u8 _pad[7];
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[16];
	__u8 payload[MAX_CAPTURE];
};

#define SOCKET_EVENT_HDR_LEN 112

struct process_event {
	__u32 kind;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u64 ts_ns;
	__s32 exit_code;
	__u32 filename_len;
	char comm[16];
	char filename[MAX_FILENAME];
};

_Static_assert(__builtin_offsetof(struct socket_event, payload) == SOCKET_EVENT_HDR_LEN,
	       "src/events.rs decodes this layout");
_Static_assert(sizeof(struct process_event) == 304, "src/events.rs decodes this layout");

#endif
