//! Kafka wire protocol.
//!
//! Request: int32 length, int16 api_key, int16 api_version, int32
//! correlation_id, nullable string client_id (int16 length), and in
//! flexible versions (request header v2) tagged fields; then the body.
//! Response: int32 length, int32 correlation_id, tagged fields for flexible
//! versions (response header v1; ApiVersions responses always use header v0),
//! then the body.
//!
//! Records: `request_type` = API name, `version` = API version,
//! `request_id` = correlation id (pairing by id), `endpoint` = API name.
//! Topic-bearing requests (Produce, Fetch, ListOffsets, Metadata,
//! CreateTopics, DeleteTopics) put the first topic in `request_domain` and
//! `topic:partition` (or the topic) in `request_resource`; v13+ Fetch and
//! Produce name topics by id, rendered as 32 hex digits. Group APIs put the
//! group id in `request_resource`. Produce with acks=0 gets no response.
//!
//! Responses are parsed with the (api key, version) of their request, kept
//! per correlation id in a small fixed table. `response_code` is the first
//! error code (Produce, ListOffsets: first partition; Fetch: the top-level
//! code, else the first partition's; others: the top-level code where the
//! schema starts with it), `response_exception` its name. Error codes that
//! the client's request caused (unknown topic, invalid request or config,
//! authorization, unsupported version, too-large messages, bad offsets,
//! group membership errors, ...) are `client_error`, the rest `server_error`.
//!
//! Bodies are never buffered: once the fields above are read, the rest of
//! the frame is skipped.

use core::fmt::Write as _;

use crate::parser::{Direction, L7Parser, Pairing, Progress, Transport};
use crate::record::{push_bounded, L7Protocol, L7Record, ResponseStatus};

/// Largest frame taken for Kafka (the broker default limit is 100 MB).
const MAX_FRAME: i32 = 100 * 1024 * 1024;
/// Bytes waited for at most while the fields we want are not all in.
const NEED_CAP: usize = 4096;
/// Requests in flight remembered per flow (producers default to 5).
const PENDING: usize = 32;

/// (name, highest known version, first flexible version or -1).
const APIS: [(&str, i16, i16); 93] = [
    ("Produce", 12, 9),
    ("Fetch", 17, 12),
    ("ListOffsets", 10, 6),
    ("Metadata", 13, 9),
    ("LeaderAndIsr", 7, 4),
    ("StopReplica", 4, 2),
    ("UpdateMetadata", 8, 6),
    ("ControlledShutdown", 3, 3),
    ("OffsetCommit", 9, 8),
    ("OffsetFetch", 9, 6),
    ("FindCoordinator", 6, 3),
    ("JoinGroup", 9, 6),
    ("Heartbeat", 4, 4),
    ("LeaveGroup", 5, 4),
    ("SyncGroup", 5, 4),
    ("DescribeGroups", 6, 5),
    ("ListGroups", 5, 3),
    ("SaslHandshake", 1, -1),
    ("ApiVersions", 4, 3),
    ("CreateTopics", 7, 5),
    ("DeleteTopics", 6, 4),
    ("DeleteRecords", 2, 2),
    ("InitProducerId", 5, 2),
    ("OffsetForLeaderEpoch", 4, 4),
    ("AddPartitionsToTxn", 5, 3),
    ("AddOffsetsToTxn", 4, 3),
    ("EndTxn", 5, 3),
    ("WriteTxnMarkers", 1, 1),
    ("TxnOffsetCommit", 5, 3),
    ("DescribeAcls", 3, 2),
    ("CreateAcls", 3, 2),
    ("DeleteAcls", 3, 2),
    ("DescribeConfigs", 4, 4),
    ("AlterConfigs", 2, 2),
    ("AlterReplicaLogDirs", 2, 2),
    ("DescribeLogDirs", 4, 2),
    ("SaslAuthenticate", 2, 2),
    ("CreatePartitions", 3, 2),
    ("CreateDelegationToken", 3, 2),
    ("RenewDelegationToken", 2, 2),
    ("ExpireDelegationToken", 2, 2),
    ("DescribeDelegationToken", 3, 2),
    ("DeleteGroups", 2, 2),
    ("ElectLeaders", 2, 2),
    ("IncrementalAlterConfigs", 1, 1),
    ("AlterPartitionReassignments", 0, 0),
    ("ListPartitionReassignments", 0, 0),
    ("OffsetDelete", 0, -1),
    ("DescribeClientQuotas", 1, 1),
    ("AlterClientQuotas", 1, 1),
    ("DescribeUserScramCredentials", 0, 0),
    ("AlterUserScramCredentials", 0, 0),
    ("Vote", 2, 0),
    ("BeginQuorumEpoch", 1, 1),
    ("EndQuorumEpoch", 1, 1),
    ("DescribeQuorum", 2, 0),
    ("AlterPartition", 3, 0),
    ("UpdateFeatures", 2, 0),
    ("Envelope", 0, 0),
    ("FetchSnapshot", 1, 0),
    ("DescribeCluster", 2, 0),
    ("DescribeProducers", 0, 0),
    ("BrokerRegistration", 4, 0),
    ("BrokerHeartbeat", 1, 0),
    ("UnregisterBroker", 0, 0),
    ("DescribeTransactions", 0, 0),
    ("ListTransactions", 2, 0),
    ("AllocateProducerIds", 0, 0),
    ("ConsumerGroupHeartbeat", 1, 0),
    ("ConsumerGroupDescribe", 1, 0),
    ("ControllerRegistration", 0, 0),
    ("GetTelemetrySubscriptions", 0, 0),
    ("PushTelemetry", 0, 0),
    ("AssignReplicasToDirs", 0, 0),
    ("ListClientMetricsResources", 0, 0),
    ("DescribeTopicPartitions", 0, 0),
    ("ShareGroupHeartbeat", 1, 0),
    ("ShareGroupDescribe", 1, 0),
    ("ShareFetch", 1, 0),
    ("ShareAcknowledge", 1, 0),
    ("AddRaftVoter", 0, 0),
    ("RemoveRaftVoter", 0, 0),
    ("UpdateRaftVoter", 0, 0),
    ("InitializeShareGroupState", 0, 0),
    ("ReadShareGroupState", 0, 0),
    ("WriteShareGroupState", 0, 0),
    ("DeleteShareGroupState", 0, 0),
    ("ReadShareGroupStateSummary", 0, 0),
    ("StreamsGroupHeartbeat", 0, 0),
    ("StreamsGroupDescribe", 0, 0),
    ("DescribeShareGroupOffsets", 0, 0),
    ("AlterShareGroupOffsets", 0, 0),
    ("DeleteShareGroupOffsets", 0, 0),
];

/// The name of an API key.
pub fn api_name(key: i16) -> Option<&'static str> {
    APIS.get(usize::try_from(key).ok()?).map(|a| a.0)
}

fn api_max_version(key: i16) -> Option<i16> {
    APIS.get(usize::try_from(key).ok()?).map(|a| a.1)
}

/// Does (key, version) use flexible encodings (compact strings and arrays,
/// tagged fields, request header v2 / response header v1)?
pub fn is_flexible(key: i16, version: i16) -> bool {
    match usize::try_from(key).ok().and_then(|k| APIS.get(k)) {
        Some(&(_, _, first)) => first >= 0 && version >= first,
        None => false,
    }
}

/// Names of error codes -1..=127.
const ERRORS: [&str; 129] = [
    "UNKNOWN_SERVER_ERROR",
    "NONE",
    "OFFSET_OUT_OF_RANGE",
    "CORRUPT_MESSAGE",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "INVALID_FETCH_SIZE",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REQUEST_TIMED_OUT",
    "BROKER_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "MESSAGE_TOO_LARGE",
    "STALE_CONTROLLER_EPOCH",
    "OFFSET_METADATA_TOO_LARGE",
    "NETWORK_EXCEPTION",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "INVALID_TOPIC_EXCEPTION",
    "RECORD_LIST_TOO_LARGE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "INVALID_REQUIRED_ACKS",
    "ILLEGAL_GENERATION",
    "INCONSISTENT_GROUP_PROTOCOL",
    "INVALID_GROUP_ID",
    "UNKNOWN_MEMBER_ID",
    "INVALID_SESSION_TIMEOUT",
    "REBALANCE_IN_PROGRESS",
    "INVALID_COMMIT_OFFSET_SIZE",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "INVALID_TIMESTAMP",
    "UNSUPPORTED_SASL_MECHANISM",
    "ILLEGAL_SASL_STATE",
    "UNSUPPORTED_VERSION",
    "TOPIC_ALREADY_EXISTS",
    "INVALID_PARTITIONS",
    "INVALID_REPLICATION_FACTOR",
    "INVALID_REPLICA_ASSIGNMENT",
    "INVALID_CONFIG",
    "NOT_CONTROLLER",
    "INVALID_REQUEST",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    "POLICY_VIOLATION",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "DUPLICATE_SEQUENCE_NUMBER",
    "INVALID_PRODUCER_EPOCH",
    "INVALID_TXN_STATE",
    "INVALID_PRODUCER_ID_MAPPING",
    "INVALID_TRANSACTION_TIMEOUT",
    "CONCURRENT_TRANSACTIONS",
    "TRANSACTION_COORDINATOR_FENCED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "SECURITY_DISABLED",
    "OPERATION_NOT_ATTEMPTED",
    "KAFKA_STORAGE_ERROR",
    "LOG_DIR_NOT_FOUND",
    "SASL_AUTHENTICATION_FAILED",
    "UNKNOWN_PRODUCER_ID",
    "REASSIGNMENT_IN_PROGRESS",
    "DELEGATION_TOKEN_AUTH_DISABLED",
    "DELEGATION_TOKEN_NOT_FOUND",
    "DELEGATION_TOKEN_OWNER_MISMATCH",
    "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
    "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    "DELEGATION_TOKEN_EXPIRED",
    "INVALID_PRINCIPAL_TYPE",
    "NON_EMPTY_GROUP",
    "GROUP_ID_NOT_FOUND",
    "FETCH_SESSION_ID_NOT_FOUND",
    "INVALID_FETCH_SESSION_EPOCH",
    "LISTENER_NOT_FOUND",
    "TOPIC_DELETION_DISABLED",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "UNSUPPORTED_COMPRESSION_TYPE",
    "STALE_BROKER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "MEMBER_ID_REQUIRED",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "GROUP_MAX_SIZE_REACHED",
    "FENCED_INSTANCE_ID",
    "ELIGIBLE_LEADERS_NOT_AVAILABLE",
    "ELECTION_NOT_NEEDED",
    "NO_REASSIGNMENT_IN_PROGRESS",
    "GROUP_SUBSCRIBED_TO_TOPIC",
    "INVALID_RECORD",
    "UNSTABLE_OFFSET_COMMIT",
    "THROTTLING_QUOTA_EXCEEDED",
    "PRODUCER_FENCED",
    "RESOURCE_NOT_FOUND",
    "DUPLICATE_RESOURCE",
    "UNACCEPTABLE_CREDENTIAL",
    "INCONSISTENT_VOTER_SET",
    "INVALID_UPDATE_VERSION",
    "FEATURE_UPDATE_FAILED",
    "PRINCIPAL_DESERIALIZATION_FAILURE",
    "SNAPSHOT_NOT_FOUND",
    "POSITION_OUT_OF_RANGE",
    "UNKNOWN_TOPIC_ID",
    "DUPLICATE_BROKER_REGISTRATION",
    "BROKER_ID_NOT_REGISTERED",
    "INCONSISTENT_TOPIC_ID",
    "INCONSISTENT_CLUSTER_ID",
    "TRANSACTIONAL_ID_NOT_FOUND",
    "FETCH_SESSION_TOPIC_ID_ERROR",
    "INELIGIBLE_REPLICA",
    "NEW_LEADER_ELECTED",
    "OFFSET_MOVED_TO_TIERED_STORAGE",
    "FENCED_MEMBER_EPOCH",
    "UNRELEASED_INSTANCE_ID",
    "UNSUPPORTED_ASSIGNOR",
    "STALE_MEMBER_EPOCH",
    "MISMATCHED_ENDPOINT_TYPE",
    "UNSUPPORTED_ENDPOINT_TYPE",
    "UNKNOWN_CONTROLLER_ID",
    "UNKNOWN_SUBSCRIPTION_ID",
    "TELEMETRY_TOO_LARGE",
    "INVALID_REGISTRATION",
    "TRANSACTION_ABORTABLE",
    "INVALID_RECORD_STATE",
    "SHARE_SESSION_NOT_FOUND",
    "INVALID_SHARE_SESSION_EPOCH",
    "FENCED_STATE_EPOCH",
    "INVALID_VOTER_KEY",
    "DUPLICATE_VOTER",
    "VOTER_NOT_FOUND",
];

/// The name of an error code.
pub fn error_name(code: i16) -> Option<&'static str> {
    ERRORS.get(usize::try_from(code as i32 + 1).ok()?).copied()
}

/// Is this error code caused by the client's request? See the module doc.
pub fn is_client_error(code: i16) -> bool {
    matches!(
        code,
        1 | 3 | 4 | 10 | 12 | 17 | 18 | 21..=26 | 28..=40 | 42..=44 | 53 | 58 | 67..=69 | 73
            | 76 | 79 | 86 | 87 | 91..=93 | 100
    )
}

/// Does `buf`, the first bytes of a flow in one direction, look like Kafka?
/// Only requests are recognized: responses carry too little structure.
pub fn detect(buf: &[u8], transport: Transport) -> Option<Direction> {
    if transport != Transport::Tcp || buf.len() < 14 {
        return None;
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if !(10..MAX_FRAME).contains(&len) {
        return None;
    }
    let total = 4 + len as usize;
    if total < buf.len() {
        return None;
    }
    let key = i16::from_be_bytes([buf[4], buf[5]]);
    let ver = i16::from_be_bytes([buf[6], buf[7]]);
    let corr = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let max = api_max_version(key)?;
    if !(0..=max).contains(&ver) || corr < 0 {
        return None;
    }
    let cid_len = i16::from_be_bytes([buf[12], buf[13]]);
    // Clients name themselves ("producer-1", "rdkafka", "sarama"), or send
    // null; an empty id is more likely the zeros of a response.
    if cid_len < -1 || cid_len == 0 || cid_len > 1024 || (cid_len as i32) + 10 > len {
        return None;
    }
    if cid_len > 0 {
        let id = &buf[14..buf.len().min(14 + cid_len as usize)];
        if !id.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            return None;
        }
    }
    // The rest of the header and the start of the body must make sense
    // (a response with a small correlation id reads like a Produce request).
    let body = &buf[4..];
    let mut r = R::new(body);
    r.skip(8)?;
    r.string(false)?;
    let flex = is_flexible(key, ver);
    if flex {
        let tags = r.uvarint()?;
        if tags > 8 {
            return None;
        }
        for _ in 0..tags {
            r.uvarint()?;
            let n = usize::try_from(r.uvarint()?).ok()?;
            r.skip(n)?;
        }
    }
    let sane = match key {
        0 => (|| {
            if ver >= 3 {
                if let Some(t) = r.string(flex)? {
                    if !t.iter().all(|b| b.is_ascii_graphic()) {
                        return Some(false);
                    }
                }
            }
            let acks = r.i16()?;
            let timeout = r.i32()?;
            let topics = r.array_len(flex)?;
            if !(-1..=1).contains(&acks) || timeout < 0 || topics == 0 || topics > 100_000 {
                return Some(false);
            }
            if ver >= 13 {
                return Some(true);
            }
            let name = r.string(flex)??;
            Some(!name.is_empty() && name.iter().all(|&b| is_topic_char(b)))
        })(),
        1 => (|| {
            if ver <= 14 {
                let replica = r.i32()?;
                if replica < -1 {
                    return Some(false);
                }
            }
            let max_wait = r.i32()?;
            let min_bytes = r.i32()?;
            Some(max_wait >= 0 && min_bytes >= 0)
        })(),
        3 if !flex => (|| {
            let n = r.i32()?;
            Some((-1..=100_000).contains(&n))
        })(),
        _ => Some(true),
    };
    // Out of bytes (a short capture) is no evidence against.
    if sane == Some(false) {
        return None;
    }
    Some(Direction::Request)
}

fn is_topic_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// A cursor over big-endian Kafka fields; every read is checked.
struct R<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn new(b: &'a [u8]) -> Self {
        R { b, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|s| s[0] as i8)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|s| i16::from_be_bytes([s[0], s[1]]))
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = *self.b.get(self.pos)?;
            self.pos += 1;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// STRING / NULLABLE_STRING (int16 length) or COMPACT_(NULLABLE_)STRING.
    fn string(&mut self, flex: bool) -> Option<Option<&'a [u8]>> {
        let n = if flex {
            match self.uvarint()? {
                0 => return Some(None),
                n => usize::try_from(n - 1).ok()?,
            }
        } else {
            match self.i16()? {
                n if n < 0 => return Some(None),
                n => n as usize,
            }
        };
        self.take(n).map(Some)
    }

    /// ARRAY (int32 length) or COMPACT_ARRAY; None-length arrays count 0.
    fn array_len(&mut self, flex: bool) -> Option<u64> {
        if flex {
            Some(self.uvarint()?.saturating_sub(1))
        } else {
            Some(self.i32()?.max(0) as u64)
        }
    }

    fn tagged_fields(&mut self) -> Option<()> {
        let n = self.uvarint()?;
        for _ in 0..n.min(1024) {
            self.uvarint()?;
            let size = usize::try_from(self.uvarint()?).ok()?;
            self.skip(size)?;
        }
        Some(())
    }
}

fn push_uuid(dst: &mut String, id: &[u8]) {
    for b in id {
        let _ = write!(dst, "{b:02x}");
    }
}

/// A request awaiting its response; `key` -1 marks a free slot.
#[derive(Clone, Copy, Debug)]
struct Pending {
    corr: i32,
    key: i16,
    version: i16,
}

const FREE: Pending = Pending { corr: 0, key: -1, version: 0 };

#[derive(Debug)]
pub struct KafkaParser {
    pending: [Pending; PENDING],
    next: usize,
}

impl Default for KafkaParser {
    fn default() -> Self {
        KafkaParser { pending: [FREE; PENDING], next: 0 }
    }
}

/// Where the error code of a response body sits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ErrAt {
    None,
    First,
    AfterThrottle,
    /// Produce: [topic [partition, error_code ...]] (throttle at the end).
    Partitions,
    /// ListOffsets v2+: throttle, then as Produce.
    ThrottlePartitions,
    Fetch,
}

fn err_at(key: i16, ver: i16) -> ErrAt {
    use ErrAt::*;
    match key {
        0 => Partitions,
        1 => Fetch,
        2 if ver >= 2 => ThrottlePartitions,
        2 => Partitions,
        10 if ver == 0 => First,
        10 if ver <= 3 => AfterThrottle,
        11 if ver <= 1 => First,
        11 => AfterThrottle,
        12..=14 | 16 if ver == 0 => First,
        12..=14 | 16 => AfterThrottle,
        17 | 18 | 36 | 38..=41 | 47 | 52..=55 => First,
        22 | 25 | 26 | 29 | 45 | 46 | 48 | 50 | 56 | 57 | 59 | 60 | 62..=64 | 66..=68 | 70..=74 => {
            AfterThrottle
        }
        43 if ver >= 1 => AfterThrottle,
        _ => None,
    }
}

impl KafkaParser {
    pub fn new(_transport: Transport) -> Self {
        Self::default()
    }

    fn remember(&mut self, corr: i32, key: i16, version: i16) {
        let slot = match self.pending.iter().position(|p| p.key < 0 || p.corr == corr) {
            Some(i) => i,
            None => {
                let i = self.next;
                self.next = (self.next + 1) % PENDING;
                i
            }
        };
        self.pending[slot] = Pending { corr, key, version };
    }

    fn lookup(&self, corr: i32) -> Option<usize> {
        self.pending.iter().position(|p| p.key >= 0 && p.corr == corr)
    }

    /// Request header and the fields we keep; None when the bytes ran out.
    fn request_fields(r: &mut R<'_>, rec: &mut L7Record, key: i16, ver: i16) -> Option<()> {
        let flex = is_flexible(key, ver);
        if !(key == 7 && ver == 0) {
            r.string(false)?; // client_id
        }
        if flex {
            r.tagged_fields()?;
        }
        match key {
            0 => {
                if ver >= 3 {
                    r.string(flex)?; // transactional_id
                }
                let acks = r.i16()?;
                if acks == 0 {
                    rec.no_response = true;
                }
                r.i32()?; // timeout
                topic_partition(r, rec, flex, ver >= 13)
            }
            1 => {
                if ver <= 14 {
                    r.i32()?; // replica_id
                }
                r.skip(8)?; // max_wait_ms, min_bytes
                if ver >= 3 {
                    r.i32()?;
                }
                if ver >= 4 {
                    r.i8()?;
                }
                if ver >= 7 {
                    r.skip(8)?; // session id, epoch
                }
                topic_partition(r, rec, flex, ver >= 13)
            }
            2 => {
                r.i32()?; // replica_id
                if ver >= 2 {
                    r.i8()?;
                }
                topic_partition(r, rec, flex, false)
            }
            3 => {
                let n = if flex || ver >= 1 {
                    if flex {
                        r.uvarint()?.checked_sub(1)
                    } else {
                        u64::try_from(r.i32()?).ok()
                    }
                } else {
                    Some(r.i32()?.max(0) as u64)
                };
                if n.unwrap_or(0) == 0 {
                    return Some(());
                }
                if ver >= 10 {
                    r.skip(16)?;
                }
                if let Some(name) = r.string(flex)? {
                    push_bounded(&mut rec.request_domain, name);
                    push_bounded(&mut rec.request_resource, name);
                }
                Some(())
            }
            19 | 20 if !(key == 20 && ver >= 6) => {
                if r.array_len(flex)? > 0 {
                    if let Some(name) = r.string(flex)? {
                        push_bounded(&mut rec.request_domain, name);
                        push_bounded(&mut rec.request_resource, name);
                    }
                }
                Some(())
            }
            8 | 11..=14 | 9 if !(key == 9 && ver >= 8) => {
                if let Some(group) = r.string(flex)? {
                    push_bounded(&mut rec.request_resource, group);
                }
                Some(())
            }
            10 if ver <= 3 => {
                if let Some(k) = r.string(flex)? {
                    push_bounded(&mut rec.request_resource, k);
                }
                Some(())
            }
            18 if ver >= 3 => {
                if let Some(name) = r.string(true)? {
                    push_bounded(&mut rec.request_resource, name);
                }
                if let Some(v) = r.string(true)? {
                    rec.request_resource.push('/');
                    push_bounded(&mut rec.request_resource, v);
                }
                Some(())
            }
            _ => Some(()),
        }
    }

    fn parse_request(
        &mut self,
        frame: &[u8],
        total: usize,
        complete: bool,
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let mut r = R::new(frame);
        let (Some(key), Some(ver), Some(corr)) = (r.i16(), r.i16(), r.i32()) else {
            return if at_end || complete { Progress::Invalid } else { Progress::NeedMore };
        };
        let Some(name) = api_name(key) else {
            return Progress::Invalid;
        };
        if ver < 0 {
            return Progress::Invalid;
        }
        rec.clear();
        rec.protocol = L7Protocol::Kafka;
        let done = Self::request_fields(&mut r, rec, key, ver).is_some();
        if !done && !complete && !at_end && frame.len() + 4 < NEED_CAP {
            return Progress::NeedMore;
        }
        rec.truncated = !done && !complete;
        rec.request_type.push_str(name);
        rec.endpoint.push_str(name);
        let _ = write!(rec.version, "{ver}");
        rec.request_id = Some(corr as u32 as u64);
        rec.request_length = Some(total.min(u32::MAX as usize) as u32);
        if !rec.no_response {
            self.remember(corr, key, ver);
        }
        let consumed = 4 + frame.len();
        Progress::Message { consumed, skip: (total - consumed) as u64 }
    }

    fn parse_response(
        &mut self,
        frame: &[u8],
        total: usize,
        complete: bool,
        at_end: bool,
        rec: &mut L7Record,
    ) -> Progress {
        let mut r = R::new(frame);
        let Some(corr) = r.i32() else {
            return if at_end || complete { Progress::Invalid } else { Progress::NeedMore };
        };
        rec.clear();
        rec.protocol = L7Protocol::Kafka;
        let slot = self.lookup(corr);
        let mut code = None;
        let mut done = true;
        if let Some(i) = slot {
            let Pending { key, version, .. } = self.pending[i];
            let res = response_error(&mut r, key, version);
            done = res.is_some();
            code = res.flatten();
            if !done && !complete && !at_end && frame.len() + 4 < NEED_CAP {
                return Progress::NeedMore;
            }
            self.pending[i] = FREE;
            if let Some(name) = api_name(key) {
                rec.request_type.push_str(name);
                rec.endpoint.push_str(name);
            }
            let _ = write!(rec.version, "{version}");
        }
        rec.truncated = !done && !complete;
        rec.request_id = Some(corr as u32 as u64);
        rec.response_length = Some(total.min(u32::MAX as usize) as u32);
        rec.response_status = match code {
            Some(0) => ResponseStatus::Ok,
            Some(c) if is_client_error(c) => ResponseStatus::ClientError,
            Some(_) => ResponseStatus::ServerError,
            None if slot.is_some() && done => ResponseStatus::Ok,
            None => ResponseStatus::Unknown,
        };
        if let Some(c) = code {
            rec.response_code = Some(c as i32);
            if c != 0 {
                match error_name(c) {
                    Some(n) => rec.response_exception.push_str(n),
                    None => {
                        let _ = write!(rec.response_exception, "error {c}");
                    }
                }
            }
        }
        let consumed = 4 + frame.len();
        Progress::Message { consumed, skip: (total - consumed) as u64 }
    }
}

/// First topic (name or id) and first partition of a request body.
fn topic_partition(r: &mut R<'_>, rec: &mut L7Record, flex: bool, topic_id: bool) -> Option<()> {
    if r.array_len(flex)? == 0 {
        return Some(());
    }
    if topic_id {
        let id = r.take(16)?;
        push_uuid(&mut rec.request_domain, id);
    } else if let Some(name) = r.string(flex)? {
        push_bounded(&mut rec.request_domain, name);
    }
    rec.request_resource.push_str(&rec.request_domain);
    if r.array_len(flex)? == 0 {
        return Some(());
    }
    let p = r.i32()?;
    let _ = write!(rec.request_resource, ":{p}");
    Some(())
}

/// The response's error code: Some(None) when the schema has none up front.
fn response_error(r: &mut R<'_>, key: i16, ver: i16) -> Option<Option<i16>> {
    let flex = is_flexible(key, ver);
    if flex && key != 18 {
        r.tagged_fields()?;
    }
    let first_partition = |r: &mut R<'_>, topic_id: bool| -> Option<Option<i16>> {
        if r.array_len(flex)? == 0 {
            return Some(None);
        }
        if topic_id {
            r.skip(16)?;
        } else {
            r.string(flex)?;
        }
        if r.array_len(flex)? == 0 {
            return Some(None);
        }
        r.i32()?;
        Some(Some(r.i16()?))
    };
    Some(match err_at(key, ver) {
        ErrAt::None => None,
        ErrAt::First => Some(r.i16()?),
        ErrAt::AfterThrottle => {
            r.i32()?;
            Some(r.i16()?)
        }
        ErrAt::Partitions => first_partition(r, ver >= 13)?,
        ErrAt::ThrottlePartitions => {
            r.i32()?;
            first_partition(r, false)?
        }
        ErrAt::Fetch => {
            if ver >= 1 {
                r.i32()?;
            }
            if ver >= 7 {
                let top = r.i16()?;
                r.i32()?; // session id
                if top != 0 {
                    return Some(Some(top));
                }
            }
            first_partition(r, ver >= 13)?
        }
    })
}

impl L7Parser for KafkaParser {
    fn protocol(&self) -> L7Protocol {
        L7Protocol::Kafka
    }

    fn pairing(&self) -> Pairing {
        Pairing::ById
    }

    fn parse(&mut self, dir: Direction, buf: &[u8], at_end: bool, rec: &mut L7Record) -> Progress {
        if buf.len() < 4 {
            return Progress::NeedMore;
        }
        let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let min = if dir == Direction::Request { 8 } else { 4 };
        if len < min || len >= MAX_FRAME {
            return Progress::Invalid;
        }
        let total = 4 + len as usize;
        let complete = buf.len() >= total;
        let frame = &buf[4..total.min(buf.len())];
        match dir {
            Direction::Request => self.parse_request(frame, total, complete, at_end, rec),
            Direction::Response => self.parse_response(frame, total, complete, at_end, rec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::MessageType;
    use crate::session::Session;
    use Direction::{Request as Req, Response as Resp};

    fn uv(v: &mut Vec<u8>, mut n: u64) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                v.push(b);
                return;
            }
            v.push(b | 0x80);
        }
    }

    fn cstr(v: &mut Vec<u8>, s: &[u8]) {
        uv(v, s.len() as u64 + 1);
        v.extend_from_slice(s);
    }

    fn frame(body: Vec<u8>) -> Vec<u8> {
        let mut v = (body.len() as i32).to_be_bytes().to_vec();
        v.extend(body);
        v
    }

    fn req(key: i16, ver: i16, corr: i32, client: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = key.to_be_bytes().to_vec();
        v.extend_from_slice(&ver.to_be_bytes());
        v.extend_from_slice(&corr.to_be_bytes());
        v.extend_from_slice(&(client.len() as i16).to_be_bytes());
        v.extend_from_slice(client);
        if is_flexible(key, ver) {
            v.push(0);
        }
        v.extend_from_slice(body);
        frame(v)
    }

    fn resp(corr: i32, flex_header: bool, body: &[u8]) -> Vec<u8> {
        let mut v = corr.to_be_bytes().to_vec();
        if flex_header {
            v.push(0);
        }
        v.extend_from_slice(body);
        frame(v)
    }

    pub(crate) fn api_versions_req() -> Vec<u8> {
        let mut b = Vec::new();
        cstr(&mut b, b"apache-kafka-java");
        cstr(&mut b, b"3.7.0");
        b.push(0);
        req(18, 3, 1, b"adminclient-1", &b)
    }

    fn api_versions_resp(error: i16) -> Vec<u8> {
        let mut b = error.to_be_bytes().to_vec();
        uv(&mut b, 4);
        for (k, min, max) in [(0i16, 0i16, 11i16), (1, 0, 16), (18, 0, 3)] {
            b.extend_from_slice(&k.to_be_bytes());
            b.extend_from_slice(&min.to_be_bytes());
            b.extend_from_slice(&max.to_be_bytes());
            b.push(0);
        }
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(0);
        resp(1, false, &b)
    }

    fn record_batch(n: usize) -> Vec<u8> {
        let mut v = vec![0u8; 61];
        v[16] = 2; // magic
        v.extend(std::iter::repeat_n(b'r', n));
        v
    }

    pub(crate) fn produce_req(corr: i32, acks: i16, records: usize) -> Vec<u8> {
        let mut b = vec![0]; // transactional_id: null
        b.extend_from_slice(&acks.to_be_bytes());
        b.extend_from_slice(&30000i32.to_be_bytes());
        uv(&mut b, 2);
        cstr(&mut b, b"test-topic");
        uv(&mut b, 2);
        b.extend_from_slice(&0i32.to_be_bytes());
        let batch = record_batch(records);
        uv(&mut b, batch.len() as u64 + 1);
        b.extend(batch);
        b.extend_from_slice(&[0, 0, 0]);
        req(0, 9, corr, b"producer-1", &b)
    }

    fn produce_resp(corr: i32, error: i16) -> Vec<u8> {
        let mut b = Vec::new();
        uv(&mut b, 2);
        cstr(&mut b, b"test-topic");
        uv(&mut b, 2);
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&error.to_be_bytes());
        b.extend_from_slice(&42i64.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&0i64.to_be_bytes());
        uv(&mut b, 1);
        b.push(0);
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&0i32.to_be_bytes());
        b.push(0);
        resp(corr, true, &b)
    }

    fn metadata_req(corr: i32) -> Vec<u8> {
        let mut b = Vec::new();
        uv(&mut b, 2);
        b.extend_from_slice(&[0; 16]);
        cstr(&mut b, b"test-topic");
        b.push(0);
        b.extend_from_slice(&[1, 0, 0]);
        req(3, 12, corr, b"consumer-g1-1", &b)
    }

    fn metadata_resp(corr: i32) -> Vec<u8> {
        let mut b = 0i32.to_be_bytes().to_vec();
        uv(&mut b, 2);
        b.extend_from_slice(&1i32.to_be_bytes());
        cstr(&mut b, b"kafka-0.kafka");
        b.extend_from_slice(&9092i32.to_be_bytes());
        b.push(0);
        b.push(0);
        cstr(&mut b, b"cluster-a");
        b.extend_from_slice(&1i32.to_be_bytes());
        uv(&mut b, 1);
        b.extend_from_slice(&(i32::MIN).to_be_bytes());
        b.push(0);
        resp(corr, true, &b)
    }

    fn fetch_req(corr: i32, ver: i16) -> Vec<u8> {
        let mut b = (-1i32).to_be_bytes().to_vec();
        b.extend_from_slice(&500i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&52_428_800i32.to_be_bytes());
        b.push(0);
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        uv(&mut b, 2);
        if ver >= 13 {
            b.extend_from_slice(&[0xab; 16]);
        } else {
            cstr(&mut b, b"test-topic");
        }
        uv(&mut b, 2);
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&100i64.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&1_048_576i32.to_be_bytes());
        b.extend_from_slice(&[0, 0]);
        uv(&mut b, 1);
        cstr(&mut b, b"");
        b.push(0);
        req(1, ver, corr, b"consumer-g1-1", &b)
    }

    fn fetch_resp(corr: i32, ver: i16, top: i16, part: i16, records: usize) -> Vec<u8> {
        let mut b = 0i32.to_be_bytes().to_vec();
        b.extend_from_slice(&top.to_be_bytes());
        b.extend_from_slice(&77i32.to_be_bytes());
        uv(&mut b, 2);
        if ver >= 13 {
            b.extend_from_slice(&[0xab; 16]);
        } else {
            cstr(&mut b, b"test-topic");
        }
        uv(&mut b, 2);
        b.extend_from_slice(&3i32.to_be_bytes());
        b.extend_from_slice(&part.to_be_bytes());
        b.extend_from_slice(&200i64.to_be_bytes());
        b.extend_from_slice(&200i64.to_be_bytes());
        b.extend_from_slice(&0i64.to_be_bytes());
        uv(&mut b, 1);
        b.extend_from_slice(&(-1i32).to_be_bytes());
        let batch = record_batch(records);
        uv(&mut b, batch.len() as u64 + 1);
        b.extend(batch);
        b.extend_from_slice(&[0, 0, 0]);
        resp(corr, true, &b)
    }

    fn both(msgs: &[(Direction, Vec<u8>)]) -> Vec<L7Record> {
        crate::test_support::whole_and_bytewise(|| KafkaParser::new(Transport::Tcp), msgs)
    }

    #[test]
    fn api_versions_flexible_request_v0_response_header() {
        let r = both(&[(Req, api_versions_req()), (Resp, api_versions_resp(0))]);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].msg_type, MessageType::Session);
        assert_eq!(r[0].request_type, "ApiVersions");
        assert_eq!(r[0].version, "3");
        assert_eq!(r[0].request_id, Some(1));
        assert_eq!(r[0].request_resource, "apache-kafka-java/3.7.0");
        assert_eq!(r[0].response_code, Some(0));
        assert_eq!(r[0].response_status, ResponseStatus::Ok);
        let r = both(&[(Req, api_versions_req()), (Resp, api_versions_resp(35))]);
        assert_eq!(r[0].response_exception, "UNSUPPORTED_VERSION");
        assert_eq!(r[0].response_status, ResponseStatus::ClientError);
    }

    #[test]
    fn produce_metadata_fetch_by_id() {
        // Out-of-order responses pair by correlation id.
        let msgs = vec![
            (Req, metadata_req(7)),
            (Req, produce_req(8, -1, 300)),
            (Req, fetch_req(9, 12)),
            (Req, fetch_req(10, 13)),
            (Resp, produce_resp(8, 0)),
            (Resp, fetch_resp(10, 13, 0, 0, 3000)),
            (Resp, metadata_resp(7)),
            (Resp, fetch_resp(9, 12, 0, 6, 10)),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 4, "{r:#?}");
        let p = &r[0];
        assert_eq!(p.request_type, "Produce");
        assert_eq!(p.version, "9");
        assert_eq!(p.request_domain, "test-topic");
        assert_eq!(p.request_resource, "test-topic:0");
        assert_eq!(p.request_id, Some(8));
        assert_eq!(p.response_status, ResponseStatus::Ok);
        assert_eq!(p.request_length, Some(msgs[1].1.len() as u32));
        let f13 = &r[1];
        assert_eq!(f13.request_type, "Fetch");
        assert_eq!(f13.request_domain, "abababababababababababababababab");
        assert_eq!(f13.request_resource, "abababababababababababababababab:3");
        assert_eq!(f13.response_length, Some(msgs[5].1.len() as u32));
        let m = &r[2];
        assert_eq!(m.request_type, "Metadata");
        assert_eq!(m.version, "12");
        assert_eq!(m.request_domain, "test-topic");
        assert_eq!(m.response_status, ResponseStatus::Ok);
        let f12 = &r[3];
        assert_eq!(f12.request_resource, "test-topic:3");
        assert_eq!(f12.response_code, Some(6));
        assert_eq!(f12.response_exception, "NOT_LEADER_OR_FOLLOWER");
        assert_eq!(f12.response_status, ResponseStatus::ServerError);
    }

    #[test]
    fn error_codes_and_acks0() {
        let msgs = vec![
            (Req, produce_req(1, 1, 10)),
            (Resp, produce_resp(1, 3)),
            (Req, produce_req(2, 0, 10)),
            (Req, fetch_req(3, 12)),
            (Resp, fetch_resp(3, 12, 70, 0, 0)),
            (Req, produce_req(4, -1, 10)),
            (Resp, produce_resp(4, 7)),
        ];
        let r = both(&msgs);
        assert_eq!(r.len(), 4, "{r:#?}");
        assert_eq!(r[0].response_code, Some(3));
        assert_eq!(r[0].response_exception, "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(r[0].response_status, ResponseStatus::ClientError);
        assert!(r[1].no_response);
        assert_eq!(r[1].request_id, Some(2));
        assert_eq!(r[2].response_exception, "FETCH_SESSION_ID_NOT_FOUND");
        assert_eq!(r[2].response_status, ResponseStatus::ServerError);
        assert_eq!(r[3].response_exception, "REQUEST_TIMED_OUT");
        assert_eq!(error_name(-1), Some("UNKNOWN_SERVER_ERROR"));
        assert_eq!(error_name(36), Some("TOPIC_ALREADY_EXISTS"));
        assert_eq!(error_name(38), Some("INVALID_REPLICATION_FACTOR"));
        assert_eq!(error_name(127), Some("VOTER_NOT_FOUND"));
        assert_eq!(error_name(128), None);
    }

    #[test]
    fn api_table() {
        assert_eq!(api_name(0), Some("Produce"));
        assert_eq!(api_name(18), Some("ApiVersions"));
        assert_eq!(api_name(44), Some("IncrementalAlterConfigs"));
        assert_eq!(api_name(60), Some("DescribeCluster"));
        assert_eq!(api_name(68), Some("ConsumerGroupHeartbeat"));
        assert_eq!(api_name(74), Some("ListClientMetricsResources"));
        assert_eq!(api_name(75), Some("DescribeTopicPartitions"));
        assert_eq!(api_name(-1), None);
        assert!(is_flexible(0, 9) && !is_flexible(0, 8));
        assert!(is_flexible(1, 12) && !is_flexible(1, 11));
        assert!(is_flexible(3, 9) && !is_flexible(3, 8));
        assert!(is_flexible(18, 3) && !is_flexible(18, 2));
        assert!(!is_flexible(17, 1));
    }

    #[test]
    fn truncated_and_large() {
        let p = produce_req(5, -1, 5000);
        let f = fetch_resp(6, 12, 0, 0, 5000);
        for n in [64usize, 256, 1024] {
            let mut s = Session::new(KafkaParser::new(Transport::Tcp));
            let mut out = Vec::new();
            s.feed(Req, &p[..n], (p.len() - n) as u64, 1, &mut |e| out.push(e.record.clone()));
            s.feed(Req, &fetch_req(6, 12), 0, 2, &mut |e| out.push(e.record.clone()));
            s.feed(Resp, &f[..n], (f.len() - n) as u64, 3, &mut |e| out.push(e.record.clone()));
            s.feed(Resp, &produce_resp(5, 0), 0, 4, &mut |e| out.push(e.record.clone()));
            assert_eq!(out.len(), 2, "n={n} {out:#?}");
            assert_eq!(out[0].request_type, "Fetch");
            assert_eq!(out[0].response_status, ResponseStatus::Ok);
            assert_eq!(out[0].response_length, Some(f.len() as u32));
            assert_eq!(out[1].request_resource, "test-topic:0");
            assert_eq!(out[1].request_length, Some(p.len() as u32));
        }
        // Header fields beyond the capture: truncated.
        let long_client = req(3, 12, 9, &[b'c'; 200], &[1, 0, 0, 0]);
        let mut s = Session::new(KafkaParser::new(Transport::Tcp));
        let mut out = Vec::new();
        s.feed(Req, &long_client[..64], (long_client.len() - 64) as u64, 1, &mut |e| {
            out.push(e.record.clone())
        });
        s.close(&mut |e| out.push(e.record.clone()));
        assert_eq!(out.len(), 1);
        assert!(out[0].truncated);
        assert_eq!(out[0].request_type, "Metadata");
    }

    #[test]
    fn detection() {
        for m in [
            api_versions_req(),
            produce_req(1, -1, 100),
            metadata_req(1),
            fetch_req(1, 12),
            fetch_req(1, 13),
        ] {
            assert_eq!(detect(&m, Transport::Tcp), Some(Req));
            assert_eq!(detect(&m[..m.len().min(64)], Transport::Tcp), Some(Req));
        }
        assert_eq!(detect(&api_versions_resp(0), Transport::Tcp), None);
        assert_eq!(detect(&produce_resp(1, 0), Transport::Tcp), None);
        for corr in [0, 1, 2, 5, 9, 12, 100, 65_536 * 3 + 5] {
            assert_eq!(detect(&produce_resp(corr, 0), Transport::Tcp), None, "{corr}");
            assert_eq!(detect(&metadata_resp(corr), Transport::Tcp), None, "{corr}");
            assert_eq!(detect(&fetch_resp(corr, 12, 0, 0, 10), Transport::Tcp), None, "{corr}");
        }
        assert_eq!(detect(&api_versions_req(), Transport::Udp), None);
        for other in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"*1\r\n$4\r\nPING\r\n",
            b"\x09\x00\x00\x00\x03select 1",
            b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00",
            b"\x00\x1d\xab\x00\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(detect(other, Transport::Tcp), None, "{other:?}");
        }
        // Unknown key, too-new version, bad client id.
        let mut m = api_versions_req();
        m[5] = 200;
        assert_eq!(detect(&m, Transport::Tcp), None);
        let mut m = api_versions_req();
        m[7] = 40;
        assert_eq!(detect(&m, Transport::Tcp), None);
        let mut m = api_versions_req();
        m[15] = 0x01;
        assert_eq!(detect(&m, Transport::Tcp), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 0x1234_5678_9abc_def1;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut rec = L7Record::default();
        let samples =
            [api_versions_req(), produce_req(1, -1, 50), fetch_req(2, 13), metadata_req(3)];
        for round in 0..4000 {
            let mut p = KafkaParser::new(Transport::Tcp);
            let mut buf = samples[round % samples.len()].clone();
            let flips = 1 + rnd() % 6;
            for _ in 0..flips {
                let i = (rnd() as usize) % buf.len();
                buf[i] = rnd() as u8;
            }
            if round % 5 == 0 {
                buf.truncate((rnd() as usize) % buf.len());
            }
            for dir in [Req, Resp] {
                for at_end in [false, true] {
                    let _ = p.parse(dir, &buf, at_end, &mut rec);
                }
            }
            let _ = detect(&buf, Transport::Tcp);
            let mut s = Session::new(KafkaParser::new(Transport::Tcp));
            for c in buf.chunks(5) {
                s.feed(Req, c, 0, 0, &mut |_| {});
                s.feed(Resp, c, rnd() % 2, 0, &mut |_| {});
            }
        }
    }

    /// Writes tests/samples/kafka/ (run with --ignored to refresh).
    #[test]
    #[ignore]
    fn write_samples() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/samples/kafka");
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in [
            ("req-apiversions.bin", api_versions_req()),
            ("req-produce.bin", produce_req(2, -1, 40)),
            ("req-metadata.bin", metadata_req(3)),
            ("req-fetch.bin", fetch_req(4, 12)),
        ] {
            assert!(detect(&bytes, Transport::Tcp).is_some(), "{name}");
            std::fs::write(format!("{dir}/{name}"), bytes).unwrap();
        }
    }
}
