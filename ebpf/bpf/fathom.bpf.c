// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket data, socket lifecycle and process events from syscall and sched
 * tracepoints, and OpenSSL plaintext from uprobes. Everything is resolved in
 * the kernel: fd -> file -> socket -> 5-tuple and TCP sequence, so userspace
 * gets self-contained records.
 */
#include "fathom_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "fathom_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load (.rodata, so the verifier prunes on them). */
volatile const __u32 capture_bytes = 1024;
volatile const __u32 ignore_tgid = 0;
/* Wake the reader each time this much more is pending (0: every event). */
volatile const __u32 wakeup_bytes = 0;
/* Drop the data of sockets whose first messages are not a known L7 protocol. */
volatile const __u32 infer_protocols = 1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

/* A TCP/UDP socket over IPv4/IPv6, with what was read to recognise it. */
struct inet_ref {
	struct sock *sk;
	__u64 ino; /* socket inode: unlike the sock's address, never reused soon */
	__u16 family;
	__u8 proto;
	__u8 _pad[5];
};

/* A socket syscall in flight: its arguments, taken at enter for the exit. */
struct active_call {
	__u64 buf;  /* data buffer, iovec array or msghdr, by hook */
	__u64 addr; /* user sockaddr of sendto/recvfrom */
	struct inet_ref sock;
	__s32 fd;
	__u32 hook;
	__u32 tcp_seq; /* next byte to send or read when the syscall entered */
	__u32 in_flight;
};

/* An SSL_read/SSL_write in flight. */
struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 len_out; /* size_t * of the _ex variants, else 0 */
	__s32 fd;      /* socket used by a syscall inside the call, else -1 */
	__u32 hook;
	__u32 in_flight;
	__u32 _pad;
};

/*
 * Everything kept per thread, in the thread's task storage: one lookup per
 * hook, cheaper than hashes keyed by tid, and freed with the thread.
 */
struct thread_state {
	struct active_call call;
	/* Separate from `call`: SSL_read/SSL_write make their read(2)/write(2)
	 * inside, on the same thread, and those use `call`. */
	struct ssl_call ssl;
	__u64 trace_id;
	__u32 last_dir;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct thread_state);
} thread_states SEC(".maps");

static __always_inline struct thread_state *thread_state(bool create)
{
	return bpf_task_storage_get(&thread_states, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/* Last socket fd seen under each SSL object, for calls served from OpenSSL's buffer. */
struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __s32);
} ssl_fds SEC(".maps");

/* Last trace id handed out; the loader seeds it so ids differ across restarts. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} trace_id_seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, NUM_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Events are built here (too big for the 512-byte stack), then copied out. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct socket_event);
} socket_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct process_event);
} process_scratch SEC(".maps");

/* Layout of syscall tracepoint records (see events/syscalls/.../format). */
struct sys_enter_ctx {
	__u64 common;
	__s32 syscall_nr;
	__u32 _pad;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s32 syscall_nr;
	__u32 _pad;
	__s64 ret;
};

struct sched_exec_ctx {
	__u64 common;
	__u32 filename_loc;
	__s32 pid;
	__s32 old_pid;
};

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;
}

static __always_inline bool ignored(__u64 pid_tgid)
{
	return ignore_tgid != 0 && (__u32)(pid_tgid >> 32) == ignore_tgid;
}

/* fd of the current task -> its TCP/UDP socket over IPv4/IPv6, or false. */
static __always_inline bool fd_to_inet_sock(__s32 fd, struct inet_ref *ref)
{
	if (fd < 0)
		return false;
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return false;
	unsigned int max_fds = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max_fds)
		return false;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file)
		return false;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	umode_t mode = BPF_CORE_READ(inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return false;
	struct socket *socket = BPF_CORE_READ(file, private_data);
	if (!socket)
		return false;
	struct sock *sk = BPF_CORE_READ(socket, sk);
	if (!sk)
		return false;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return false;
	__u16 proto = BPF_CORE_READ(sk, sk_protocol);
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return false;
	ref->sk = sk;
	ref->ino = BPF_CORE_READ(inode, i_ino);
	ref->family = family;
	ref->proto = proto;
	return true;
}

/*
 * Fill family, protocol, addresses and ports. src is the sender of the bytes:
 * the local end for egress, the remote end for ingress. An unconnected UDP
 * socket has no peer in the sock; then the peer comes from the user sockaddr.
 */
static __always_inline void fill_tuple(struct socket_event *ev, const struct inet_ref *ref,
				       __u8 dir, const void *uaddr)
{
	__u8 *local = dir == DIR_EGRESS ? ev->saddr : ev->daddr;
	__u8 *remote = dir == DIR_EGRESS ? ev->daddr : ev->saddr;
	struct sock *sk = ref->sk;
	__u16 family = ref->family;
	__u16 lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	__u16 rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	/* A TCP socket that reached CLOSE has given its port back (skc_num = 0),
	 * which is what a close(2) after the peer's FIN usually sees. */
	if (lport == 0)
		lport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));

	__builtin_memset(ev->saddr, 0, sizeof(ev->saddr));
	__builtin_memset(ev->daddr, 0, sizeof(ev->daddr));
	ev->family = family;
	ev->l4_proto = ref->proto;
	if (family == AF_INET) {
		bpf_core_read(local, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(remote, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(remote, 16, &sk->__sk_common.skc_v6_daddr);
	}
	if (rport == 0 && uaddr) {
		__u16 ufamily = 0;
		bpf_probe_read_user(&ufamily, sizeof(ufamily), uaddr);
		if (ufamily == AF_INET && family == AF_INET) {
			struct sockaddr_in_user sa = {};
			if (!bpf_probe_read_user(&sa, sizeof(sa), uaddr)) {
				rport = bpf_ntohs(sa.sin_port);
				__builtin_memcpy(remote, &sa.sin_addr, 4);
			}
		} else if (ufamily == AF_INET6 && family == AF_INET6) {
			struct sockaddr_in6_user sa6 = {};
			if (!bpf_probe_read_user(&sa6, sizeof(sa6), uaddr)) {
				rport = bpf_ntohs(sa6.sin6_port);
				__builtin_memcpy(remote, sa6.sin6_addr, 16);
			}
		}
	}
	ev->sport = dir == DIR_EGRESS ? lport : rport;
	ev->dport = dir == DIR_EGRESS ? rport : lport;
}

static __always_inline void fill_task(struct socket_event *ev, __u64 pid_tgid)
{
	ev->pid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->ts_ns = bpf_ktime_get_ns();
	/* The process's name (its thread group leader's), not the calling thread's:
	 * a tokio or Java server's threads are named after their pool. */
	struct task_struct *task = (void *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&ev->comm, task, group_leader, comm);
}

/*
 * A thread's first ingress after an egress (or ever) opens a new id; the
 * egress that follows on any socket carries it, linking a server's inbound
 * request to the outbound calls it makes while serving it.
 */
static __always_inline __u64 syscall_trace_id(struct thread_state *ts, __u8 dir)
{
	if (!ts)
		return 0;
	if (dir == DIR_EGRESS) {
		if (ts->trace_id)
			ts->last_dir = DIR_EGRESS;
		return ts->trace_id;
	}
	if (ts->trace_id && ts->last_dir == DIR_INGRESS)
		return ts->trace_id;
	__u32 zero = 0;
	__u64 *seq = bpf_map_lookup_elem(&trace_id_seq, &zero);
	if (!seq)
		return 0;
	ts->trace_id = __sync_fetch_and_add(seq, 1) + 1;
	ts->last_dir = DIR_INGRESS;
	return ts->trace_id;
}

/*
 * A wakeup per event costs an irq_work and a context switch each. Instead
 * the reader is woken each time the pending data crosses a multiple of
 * wakeup_bytes: about once per batch when it keeps up, still bounded when it
 * is away. Its poll returns at once while anything is pending, and its
 * timeout bounds the wait for a batch that never fills.
 */
static __always_inline __u64 ringbuf_flags(__u64 size)
{
	if (wakeup_bytes == 0)
		return 0;
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	return avail / wakeup_bytes != (avail + size) / wakeup_bytes ? BPF_RB_FORCE_WAKEUP
								      : BPF_RB_NO_WAKEUP;
}

static __always_inline void output_socket_event(struct socket_event *ev, __u32 hook)
{
	__u64 len = ev->cap_len;
	/* Bound the copy for the verifier on the register it actually checks. */
	asm volatile("" : "+r"(len));
	if (len > MAX_CAPTURE)
		len = MAX_CAPTURE;
	if (bpf_ringbuf_output(&events, ev, SOCKET_EVENT_HDR_LEN + len,
			       ringbuf_flags(SOCKET_EVENT_HDR_LEN + len)))
		count(COUNTER_DROPS);
	else
		count(hook * 2 + 1);
}

/*
 * Taken at enter, not derived at exit: a read that consumes the peer's FIN
 * moves copied_seq one past the data.
 */
static __always_inline __u32 tcp_seq_now(const struct inet_ref *ref, __u8 dir)
{
	if (ref->proto != IPPROTO_TCP)
		return 0;
	struct tcp_sock *tp = (void *)ref->sk;
	return dir == DIR_EGRESS ? BPF_CORE_READ(tp, write_seq) : BPF_CORE_READ(tp, copied_seq);
}

static __always_inline int data_enter(struct sys_enter_ctx *ctx, __u32 hook, __u8 dir)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ignored(pid_tgid))
		return 0;
	__s32 fd = (__s32)ctx->args[0];
	struct inet_ref ref;
	if (!fd_to_inet_sock(fd, &ref))
		return 0;
	struct active_call call = {
		.buf = ctx->args[1],
		.sock = ref,
		.fd = fd,
		.hook = hook,
		.tcp_seq = tcp_seq_now(&ref, dir),
	};
	if (hook == HOOK_SENDTO || hook == HOOK_RECVFROM)
		call.addr = ctx->args[4];
	struct thread_state *ts = thread_state(true);
	if (!ts)
		return 0;
	ts->call = call;
	ts->call.in_flight = 1;
	if (ts->ssl.in_flight)
		ts->ssl.fd = fd;
	count(hook * 2);
	return 0;
}

/*
 * Protocol inference. A socket's first data messages (either direction) are
 * classified by their first bytes; once one is recognised as an L7 protocol
 * the socket is reported from then on, once one is TLS ciphertext (the
 * uprobes report its plaintext) or INFER_TRIES went by unrecognised it is
 * not. Until then its messages are dropped too: bulk transfers never reach
 * the ring buffer. Keyed by socket inode, which is not reused the way a
 * sock's address is; close forgets (a close of one of several fds for a
 * socket makes it classify again, from its next message).
 */
#define INFER_TRIES 8
#define INFER_PEEK 16

enum verdict {
	VERDICT_UNKNOWN = 0,
	VERDICT_L7 = 1,
	VERDICT_NOT_L7 = 2,
};

struct sock_verdict {
	__u8 verdict;
	__u8 tries;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_verdict);
} sock_verdicts SEC(".maps");

static __always_inline void forget_socket(const struct inet_ref *ref)
{
	if (infer_protocols)
		bpf_map_delete_elem(&sock_verdicts, &ref->ino);
}

static __always_inline bool is_digit(__u8 c)
{
	return c >= '0' && c <= '9';
}

static __always_inline __u32 word(const __u8 *b)
{
	return b[0] | (b[1] << 8) | (b[2] << 16) | ((__u32)b[3] << 24);
}

#define WORD(s) ((__u32)(s)[0] | ((__u32)(s)[1] << 8) | ((__u32)(s)[2] << 16) | ((__u32)(s)[3] << 24))

static __always_inline bool http1(const __u8 *b, __u64 n)
{
	if (n < 8)
		return false;
	__u32 w = word(b);
	if (w == WORD("HTTP"))
		return b[4] == '/' && b[5] == '1' && b[6] == '.';
	return w == WORD("GET ") || w == WORD("PUT ") || w == WORD("POST") || w == WORD("HEAD") ||
	       w == WORD("DELE") || w == WORD("OPTI") || w == WORD("PATC") || w == WORD("CONN") ||
	       w == WORD("TRAC");
}

/* The client preface, or a SETTINGS frame on stream 0 (a server's first frame). */
static __always_inline bool http2(const __u8 *b, __u64 n)
{
	if (n < 9)
		return false;
	if (n >= 14 && word(b) == WORD("PRI ") && word(b + 4) == WORD("* HT") &&
	    word(b + 8) == WORD("TP/2") && b[12] == '.' && b[13] == '0')
		return true;
	__u32 len = (b[0] << 16) | (b[1] << 8) | b[2];
	return b[3] == 4 && b[4] <= 1 && word(b + 5) == 0 && len % 6 == 0;
}

/* RESP: '*' or '$' + length, '+' or '-' + word, ':' + integer, then CRLF. */
static __always_inline bool redis(const __u8 *b, __u64 n)
{
	if (n < 3)
		return false;
	__u8 t = b[0], c = b[1];
	if (t == '*' || t == '$' || t == ':') {
		if (!is_digit(c) && c != '-')
			return false;
	} else if (t == '+' || t == '-') {
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return false;
	} else {
		return false;
	}
#pragma unroll
	for (int i = 2; i < INFER_PEEK - 1; i++) {
		if (i + 1 >= n)
			break;
		if (b[i] == '\r')
			return b[i + 1] == '\n';
		if ((t == '*' || t == '$' || t == ':') && !is_digit(b[i]))
			return false;
	}
	/* A simple string or error longer than the peek: its start looked right. */
	return t == '+' || t == '-';
}

/*
 * One whole MySQL packet, sequence 0: the server greeting (protocol 10) or a
 * client command.
 */
static __always_inline bool mysql(const __u8 *b, __u64 n, __u64 len)
{
	if (n < 5 || b[3] != 0)
		return false;
	__u32 plen = b[0] | (b[1] << 8) | (b[2] << 16);
	if (plen == 0 || plen + 4 != len)
		return false;
	__u8 c = b[4];
	/* greeting; COM_QUIT, INIT_DB, QUERY, FIELD_LIST, STATISTICS, PING; STMT_* */
	return c == 10 || (c >= 1 && c <= 4) || c == 9 || c == 14 || (c >= 22 && c <= 28);
}

/* A Kafka request header: size, api_key, api_version, correlation id, client id. */
static __always_inline bool kafka(const __u8 *b, __u64 n, __u64 len)
{
	if (n < 14)
		return false;
	__u32 size = ((__u32)b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
	__u16 api_key = (b[4] << 8) | b[5];
	__u16 api_version = (b[6] << 8) | b[7];
	__s16 client_id_len = (__s16)((b[12] << 8) | b[13]);
	return size >= 10 && (__u64)size + 4 <= len && api_key <= 80 && api_version <= 20 &&
	       client_id_len >= -1 && (client_id_len < 0 || (__u64)client_id_len + 10 <= size);
}

/* A DNS header with one question, opcode QUERY/IQUERY/STATUS, Z clear. */
static __always_inline bool dns(const __u8 *b, __u64 n, const struct socket_event *ev)
{
	if (ev->l4_proto != IPPROTO_UDP || n < 12)
		return false;
	if (ev->sport == 53 || ev->dport == 53 || ev->sport == 5353 || ev->dport == 5353)
		return true;
	return b[4] == 0 && b[5] == 1 && ((b[2] >> 3) & 0xf) <= 2 && (b[3] & 0x40) == 0;
}

static __always_inline enum verdict classify(const struct socket_event *ev, const void *buf,
					     __u64 avail, __u64 len)
{
	__u8 b[INFER_PEEK] = {};
	__u64 n = avail < INFER_PEEK ? avail : INFER_PEEK;
	if (n == 0 || !buf)
		return VERDICT_UNKNOWN;
	asm volatile("" : "+r"(n));
	n = ((n - 1) & (INFER_PEEK - 1)) + 1;
	if (bpf_probe_read_user(b, n, buf))
		return VERDICT_UNKNOWN;
	/* TLS record: handshake, alert, change_cipher_spec or application data. */
	if (n >= 5 && b[0] >= 0x14 && b[0] <= 0x17 && b[1] == 3 && b[2] <= 4)
		return VERDICT_NOT_L7;
	if (http1(b, n) || http2(b, n) || redis(b, n) || mysql(b, n, len) || kafka(b, n, len) ||
	    dns(b, n, ev))
		return VERDICT_L7;
	/* Dubbo: magic, then a 16-byte header. */
	if (n >= 16 && b[0] == 0xda && b[1] == 0xbb)
		return VERDICT_L7;
	return VERDICT_UNKNOWN;
}

/* Decided sockets cost one lookup: the bytes are read only while undecided. */
static __always_inline enum verdict known_verdict(const struct inet_ref *ref)
{
	struct sock_verdict *v = bpf_map_lookup_elem(&sock_verdicts, &ref->ino);
	return v ? v->verdict : VERDICT_UNKNOWN;
}

/* Whether this message (and the socket) is reported; ev has its tuple filled. */
static __always_inline bool infer(const struct inet_ref *ref, const struct socket_event *ev,
				  const void *buf, __u64 avail, __u64 len)
{
	enum verdict v = classify(ev, buf, avail, len);
	struct sock_verdict *known = bpf_map_lookup_elem(&sock_verdicts, &ref->ino);
	if (v == VERDICT_UNKNOWN) {
		if (!known) {
			struct sock_verdict first = { .verdict = VERDICT_UNKNOWN, .tries = 1 };
			bpf_map_update_elem(&sock_verdicts, &ref->ino, &first, BPF_NOEXIST);
		} else if (known->verdict == VERDICT_UNKNOWN && ++known->tries >= INFER_TRIES) {
			known->verdict = VERDICT_NOT_L7;
		}
		return false;
	}
	struct sock_verdict decided = { .verdict = v };
	bpf_map_update_elem(&sock_verdicts, &ref->ino, &decided, BPF_ANY);
	return v == VERDICT_L7;
}

/* One message of a data syscall: its event, with up to capture_bytes of buf. */
static __always_inline void emit_data(struct thread_state *ts, const struct active_call *call,
				      __u64 pid_tgid, __u32 hook, __u8 dir, const void *buf,
				      __u64 avail, __u64 len, const void *uaddr, __u32 tcp_seq)
{
	enum verdict known = VERDICT_L7;
	if (infer_protocols) {
		known = known_verdict(&call->sock);
		if (known == VERDICT_NOT_L7) {
			count(COUNTER_FILTERED + hook);
			return;
		}
	}
	__u32 zero = 0;
	struct socket_event *ev = bpf_map_lookup_elem(&socket_scratch, &zero);
	if (!ev)
		return;
	fill_tuple(ev, &call->sock, dir, uaddr);
	if (known == VERDICT_UNKNOWN && !infer(&call->sock, ev, buf, avail, len)) {
		count(COUNTER_FILTERED + hook);
		return;
	}
	fill_task(ev, pid_tgid);
	ev->kind = EVENT_DATA;
	ev->fd = call->fd;
	ev->hook = hook;
	ev->direction = dir;
	ev->syscall_len = len;
	ev->tcp_seq = tcp_seq;
	ev->syscall_trace_id = syscall_trace_id(ts, dir);

	__u64 n = avail;
	if (n > len)
		n = len;
	if (n > capture_bytes)
		n = capture_bytes;
	ev->cap_len = 0;
	if (n > 0 && buf) {
		asm volatile("" : "+r"(n));
		n = ((n - 1) & (MAX_CAPTURE - 1)) + 1;
		if (!bpf_probe_read_user(ev->payload, n, buf))
			ev->cap_len = n;
	}
	output_socket_event(ev, hook);
}

/* Vectored I/O is captured from the first buffer only. */
static __always_inline const void *first_iov(const void *iovs, __u64 *avail)
{
	struct iovec iov = {};
	if (!iovs || bpf_probe_read_user(&iov, sizeof(iov), iovs))
		return NULL;
	if (*avail > iov.iov_len)
		*avail = iov.iov_len;
	return iov.iov_base;
}

/* struct mmsghdr as user space lays it out. */
struct user_mmsghdr {
	struct user_msghdr msg_hdr;
	unsigned int msg_len;
	unsigned int _pad;
};

/*
 * sendmmsg/recvmmsg return a count of messages, each with its own length:
 * one event per message, for the first MAX_MMSG (glibc's resolver sends its
 * A and AAAA queries as two).
 */
#define MAX_MMSG 4

static __always_inline void mmsg_exit(struct thread_state *ts, const struct active_call *call,
				      __u64 pid_tgid, __u32 hook, __u8 dir, __s64 count)
{
	__u32 seq = call->tcp_seq;
#pragma unroll
	for (int i = 0; i < MAX_MMSG; i++) {
		if (i >= count)
			break;
		struct user_mmsghdr m = {};
		if (bpf_probe_read_user(&m, sizeof(m),
					(const void *)(call->buf + i * sizeof(struct user_mmsghdr))))
			break;
		__u64 avail = m.msg_len;
		const void *buf = m.msg_hdr.msg_iovlen ? first_iov(m.msg_hdr.msg_iov, &avail) : NULL;
		emit_data(ts, call, pid_tgid, hook, dir, buf, avail, m.msg_len, m.msg_hdr.msg_name,
			  call->sock.proto == IPPROTO_TCP ? seq : 0);
		seq += m.msg_len;
	}
}

static __always_inline int data_exit(struct sys_exit_ctx *ctx, __u32 hook, __u8 dir)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct thread_state *ts = thread_state(false);
	if (!ts || !ts->call.in_flight)
		return 0;
	struct active_call call = ts->call;
	ts->call.in_flight = 0;
	__s64 ret = ctx->ret;
	if (ret <= 0 || call.hook != hook)
		return 0;

	if (hook == HOOK_SENDMMSG || hook == HOOK_RECVMMSG) {
		mmsg_exit(ts, &call, pid_tgid, hook, dir, ret);
		return 0;
	}
	const void *buf = (const void *)call.buf;
	const void *uaddr = (const void *)call.addr;
	__u64 avail = ret;
	if (hook == HOOK_SENDMSG || hook == HOOK_RECVMSG) {
		struct user_msghdr msg = {};
		if (bpf_probe_read_user(&msg, sizeof(msg), buf))
			return 0;
		uaddr = msg.msg_name;
		buf = msg.msg_iovlen ? first_iov(msg.msg_iov, &avail) : NULL;
	} else if (hook == HOOK_READV || hook == HOOK_WRITEV) {
		buf = first_iov(buf, &avail);
	}
	emit_data(ts, &call, pid_tgid, hook, dir, buf, avail, ret, uaddr, call.tcp_seq);
	return 0;
}

static __always_inline int socket_lifecycle(__u64 pid_tgid, const struct inet_ref *ref, __s32 fd,
					    __u32 kind, __u32 hook, __u8 dir)
{
	__u32 zero = 0;
	struct socket_event *ev = bpf_map_lookup_elem(&socket_scratch, &zero);
	if (!ev)
		return 0;
	fill_task(ev, pid_tgid);
	ev->kind = kind;
	ev->fd = fd;
	ev->hook = hook;
	ev->direction = dir;
	ev->syscall_len = 0;
	ev->syscall_trace_id = 0;
	ev->cap_len = 0;
	fill_tuple(ev, ref, dir, NULL);
	ev->tcp_seq = tcp_seq_now(ref, dir);
	output_socket_event(ev, hook);
	return 0;
}

#define DATA_HOOK(name, hook, dir)                                                        \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                       \
	int fathom_enter_##name(struct sys_enter_ctx *ctx)                                \
	{                                                                                 \
		return data_enter(ctx, hook, dir);                                             \
	}                                                                                 \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                        \
	int fathom_exit_##name(struct sys_exit_ctx *ctx)                                  \
	{                                                                                 \
		return data_exit(ctx, hook, dir);                                         \
	}

DATA_HOOK(read, HOOK_READ, DIR_INGRESS)
DATA_HOOK(write, HOOK_WRITE, DIR_EGRESS)
DATA_HOOK(recvfrom, HOOK_RECVFROM, DIR_INGRESS)
DATA_HOOK(sendto, HOOK_SENDTO, DIR_EGRESS)
DATA_HOOK(readv, HOOK_READV, DIR_INGRESS)
DATA_HOOK(writev, HOOK_WRITEV, DIR_EGRESS)
DATA_HOOK(recvmsg, HOOK_RECVMSG, DIR_INGRESS)
DATA_HOOK(sendmsg, HOOK_SENDMSG, DIR_EGRESS)
DATA_HOOK(recvmmsg, HOOK_RECVMMSG, DIR_INGRESS)
DATA_HOOK(sendmmsg, HOOK_SENDMMSG, DIR_EGRESS)

SEC("tracepoint/syscalls/sys_enter_connect")
int fathom_enter_connect(struct sys_enter_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ignored(pid_tgid))
		return 0;
	__s32 fd = (__s32)ctx->args[0];
	struct inet_ref ref;
	if (!fd_to_inet_sock(fd, &ref))
		return 0;
	struct thread_state *ts = thread_state(true);
	if (!ts)
		return 0;
	struct active_call call = { .sock = ref, .fd = fd, .hook = HOOK_CONNECT, .in_flight = 1 };
	ts->call = call;
	count(HOOK_CONNECT * 2);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int fathom_exit_connect(struct sys_exit_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct thread_state *ts = thread_state(false);
	if (!ts || !ts->call.in_flight)
		return 0;
	struct active_call call = ts->call;
	ts->call.in_flight = 0;
	/* A non-blocking connect has its local port once it is in progress. */
	if (call.hook != HOOK_CONNECT || (ctx->ret != 0 && ctx->ret != -EINPROGRESS))
		return 0;
	return socket_lifecycle(pid_tgid, &call.sock, call.fd, EVENT_CONNECT, HOOK_CONNECT,
				DIR_EGRESS);
}

static __always_inline int accept_exit(struct sys_exit_ctx *ctx, __u32 hook)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ignored(pid_tgid) || ctx->ret < 0)
		return 0;
	count(hook * 2);
	__s32 fd = (__s32)ctx->ret;
	struct inet_ref ref;
	if (!fd_to_inet_sock(fd, &ref))
		return 0;
	/* The accepted side is the server: the peer is the source. */
	return socket_lifecycle(pid_tgid, &ref, fd, EVENT_ACCEPT, hook, DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int fathom_exit_accept(struct sys_exit_ctx *ctx)
{
	return accept_exit(ctx, HOOK_ACCEPT);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int fathom_exit_accept4(struct sys_exit_ctx *ctx)
{
	return accept_exit(ctx, HOOK_ACCEPT4);
}

/* At enter: after close the fd no longer leads to the socket. */
SEC("tracepoint/syscalls/sys_enter_close")
int fathom_enter_close(struct sys_enter_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ignored(pid_tgid))
		return 0;
	__s32 fd = (__s32)ctx->args[0];
	struct inet_ref ref;
	if (!fd_to_inet_sock(fd, &ref))
		return 0;
	count(HOOK_CLOSE * 2);
	forget_socket(&ref);
	return socket_lifecycle(pid_tgid, &ref, fd, EVENT_CLOSE, HOOK_CLOSE, DIR_EGRESS);
}

SEC("tracepoint/sched/sched_process_exec")
int fathom_sched_exec(struct sched_exec_ctx *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	count(HOOK_EXEC * 2);
	__u32 zero = 0;
	struct process_event *ev = bpf_map_lookup_elem(&process_scratch, &zero);
	if (!ev)
		return 0;
	struct task_struct *task = (void *)bpf_get_current_task();
	ev->kind = EVENT_EXEC;
	ev->pid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->ts_ns = bpf_ktime_get_ns();
	ev->exit_code = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	__u32 off = ctx->filename_loc & 0xffff;
	long n = bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), (void *)ctx + off);
	ev->filename_len = n > 0 ? n - 1 : 0;
	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), ringbuf_flags(sizeof(*ev))))
		count(COUNTER_DROPS);
	else
		count(HOOK_EXEC * 2 + 1);
	return 0;
}

/* Raw tracepoint: its arguments are the tasks, so threads can be told apart. */
SEC("raw_tracepoint/sched_process_fork")
int fathom_sched_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (void *)ctx->args[0];
	struct task_struct *child = (void *)ctx->args[1];
	__s32 child_pid = BPF_CORE_READ(child, pid);
	__s32 child_tgid = BPF_CORE_READ(child, tgid);
	if (child_pid != child_tgid)
		return 0; /* a new thread, not a new process */
	count(HOOK_FORK * 2);
	__u32 zero = 0;
	struct process_event *ev = bpf_map_lookup_elem(&process_scratch, &zero);
	if (!ev)
		return 0;
	ev->kind = EVENT_FORK;
	ev->pid = child_tgid;
	ev->tid = child_pid;
	ev->ppid = BPF_CORE_READ(parent, tgid);
	ev->ts_ns = bpf_ktime_get_ns();
	ev->exit_code = 0;
	ev->filename_len = 0;
	ev->filename[0] = 0;
	BPF_CORE_READ_STR_INTO(&ev->comm, child, comm);
	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), ringbuf_flags(sizeof(*ev))))
		count(COUNTER_DROPS);
	else
		count(HOOK_FORK * 2 + 1);
	return 0;
}

/* Fires for every exiting thread; a process exit is reported once, for the last one. */
SEC("tracepoint/sched/sched_process_exit")
int fathom_sched_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)pid_tgid;
	count(HOOK_EXIT * 2);

	struct task_struct *task = (void *)bpf_get_current_task();
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	__u32 zero = 0;
	struct process_event *ev = bpf_map_lookup_elem(&process_scratch, &zero);
	if (!ev)
		return 0;
	ev->kind = EVENT_EXIT;
	ev->pid = pid_tgid >> 32;
	ev->tid = tid;
	ev->ppid = BPF_CORE_READ(task, real_parent, tgid);
	ev->ts_ns = bpf_ktime_get_ns();
	ev->exit_code = BPF_CORE_READ(task, exit_code);
	ev->filename_len = 0;
	ev->filename[0] = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	if (bpf_ringbuf_output(&events, ev, sizeof(*ev), ringbuf_flags(sizeof(*ev))))
		count(COUNTER_DROPS);
	else
		count(HOOK_EXIT * 2 + 1);
	return 0;
}

static __always_inline int ssl_enter(struct pt_regs *ctx, __u32 hook, bool ex)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (ignored(pid_tgid))
		return 0;
	struct ssl_call call = {
		.ssl = PT_REGS_PARM1(ctx),
		.buf = PT_REGS_PARM2(ctx),
		.len_out = ex ? PT_REGS_PARM4(ctx) : 0,
		.fd = -1,
		.hook = hook,
		.in_flight = 1,
	};
	struct thread_state *ts = thread_state(true);
	if (!ts)
		return 0;
	ts->ssl = call;
	count(hook * 2);
	return 0;
}

/* Plaintext as the application handed it to, or got it from, OpenSSL. */
static __always_inline int ssl_exit(struct pt_regs *ctx, __u32 hook, __u8 dir)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct thread_state *ts = thread_state(false);
	if (!ts || !ts->ssl.in_flight)
		return 0;
	struct ssl_call call = ts->ssl;
	ts->ssl.in_flight = 0;
	if (call.hook != hook)
		return 0;
	long rc = PT_REGS_RC(ctx);
	__u64 len;
	if (call.len_out) {
		/* SSL_read_ex/SSL_write_ex return 1 and store the count. */
		if ((int)rc != 1 || bpf_probe_read_user(&len, sizeof(len), (void *)call.len_out))
			return 0;
	} else {
		if ((int)rc <= 0)
			return 0;
		len = (int)rc;
	}
	if (len == 0)
		return 0;

	struct ssl_key key = { .ssl = call.ssl, .tgid = pid_tgid >> 32 };
	if (call.fd >= 0) {
		bpf_map_update_elem(&ssl_fds, &key, &call.fd, BPF_ANY);
	} else {
		__s32 *cached = bpf_map_lookup_elem(&ssl_fds, &key);
		if (cached)
			call.fd = *cached;
	}

	__u32 zero = 0;
	struct socket_event *ev = bpf_map_lookup_elem(&socket_scratch, &zero);
	if (!ev)
		return 0;
	fill_task(ev, pid_tgid);
	ev->kind = EVENT_DATA;
	ev->fd = call.fd;
	ev->hook = hook;
	ev->direction = dir;
	ev->syscall_len = len;
	ev->tcp_seq = 0;
	struct inet_ref ref;
	if (fd_to_inet_sock(call.fd, &ref)) {
		fill_tuple(ev, &ref, dir, NULL);
	} else {
		/* Socket unknown: TLS over TCP, addresses left unspecified. */
		__builtin_memset(ev->saddr, 0, sizeof(ev->saddr));
		__builtin_memset(ev->daddr, 0, sizeof(ev->daddr));
		ev->family = 0;
		ev->sport = 0;
		ev->dport = 0;
		ev->l4_proto = IPPROTO_TCP;
	}
	ev->syscall_trace_id = syscall_trace_id(ts, dir);

	__u64 n = len;
	if (n > capture_bytes)
		n = capture_bytes;
	ev->cap_len = 0;
	if (n > 0 && call.buf) {
		asm volatile("" : "+r"(n));
		n = ((n - 1) & (MAX_CAPTURE - 1)) + 1;
		if (!bpf_probe_read_user(ev->payload, n, (void *)call.buf))
			ev->cap_len = n;
	}
	output_socket_event(ev, hook);
	return 0;
}

SEC("uprobe")
int fathom_ssl_write_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, HOOK_SSL_WRITE, false);
}

SEC("uretprobe")
int fathom_ssl_write_exit(struct pt_regs *ctx)
{
	return ssl_exit(ctx, HOOK_SSL_WRITE, DIR_EGRESS);
}

SEC("uprobe")
int fathom_ssl_write_ex_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, HOOK_SSL_WRITE, true);
}

SEC("uprobe")
int fathom_ssl_read_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, HOOK_SSL_READ, false);
}

SEC("uretprobe")
int fathom_ssl_read_exit(struct pt_regs *ctx)
{
	return ssl_exit(ctx, HOOK_SSL_READ, DIR_INGRESS);
}

SEC("uprobe")
int fathom_ssl_read_ex_enter(struct pt_regs *ctx)
{
	return ssl_enter(ctx, HOOK_SSL_READ, true);
}
