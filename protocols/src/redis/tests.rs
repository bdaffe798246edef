use super::*;
use crate::record::MessageType;
use crate::session::Session;

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

fn bulk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("${}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

fn feed(
    s: &mut Session<RedisParser>,
    dir: Direction,
    bytes: &[u8],
    missing: u64,
    out: &mut Vec<L7Record>,
) {
    s.feed(dir, bytes, missing, 1, &mut |ev| out.push(ev.record.clone()));
}

/// Requests then replies through one session, each cut into `chunk`-byte
/// segments (0: whole).
fn run(reqs: &[u8], resps: &[u8], chunk: usize) -> Vec<L7Record> {
    let mut s = Session::new(RedisParser::new(Transport::Tcp));
    let mut out = Vec::new();
    for (dir, bytes) in [(Direction::Request, reqs), (Direction::Response, resps)] {
        if chunk == 0 {
            feed(&mut s, dir, bytes, 0, &mut out);
        } else {
            for c in bytes.chunks(chunk) {
                feed(&mut s, dir, c, 0, &mut out);
            }
        }
    }
    s.close(&mut |ev| out.push(ev.record.clone()));
    out
}

fn one(dir: Direction, bytes: &[u8]) -> (Progress, L7Record) {
    let mut p = RedisParser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let pr = p.parse(dir, bytes, false, &mut rec);
    (pr, rec)
}

fn reply(bytes: &[u8]) -> L7Record {
    let (pr, rec) = one(Direction::Response, bytes);
    assert_eq!(
        pr,
        Progress::Message { consumed: bytes.len(), skip: 0 },
        "{:?}",
        String::from_utf8_lossy(bytes)
    );
    rec
}

#[test]
fn set_and_get() {
    let reqs = [cmd(&[b"SET", b"k", b"v"]), cmd(&[b"GET", b"k"])].concat();
    let resps = b"+OK\r\n$1\r\nv\r\n";
    let out = run(&reqs, resps, 0);
    assert_eq!(out.len(), 2);
    let set = &out[0];
    assert_eq!(set.msg_type, MessageType::Session);
    assert_eq!(set.protocol, L7Protocol::Redis);
    assert_eq!(set.version, "RESP2");
    assert_eq!(set.request_type, "SET");
    assert_eq!(set.endpoint, "SET");
    assert_eq!(set.request_resource, "SET k v");
    assert_eq!(set.request_length, Some(27));
    assert_eq!(set.response_status, ResponseStatus::Ok);
    assert_eq!(set.response_result, "OK");
    assert_eq!(set.response_length, Some(5));
    let get = &out[1];
    assert_eq!(get.request_resource, "GET k");
    assert_eq!(get.response_result, "v");
    assert_eq!(get.response_length, Some(7));
    assert!(!get.truncated);
    for chunk in 1..8 {
        assert_eq!(run(&reqs, resps, chunk), out, "chunk {chunk}");
    }
}

#[test]
fn lower_case_commands_and_two_word_commands() {
    let (_, rec) = one(Direction::Request, &cmd(&[b"client", b"setname", b"me"]));
    assert_eq!(rec.request_type, "CLIENT");
    assert_eq!(rec.endpoint, "CLIENT");
    assert_eq!(rec.request_resource, "client setname me");
    let (_, rec) = one(Direction::Request, &cmd(&[b"CONFIG", b"GET", b"maxmemory"]));
    assert_eq!(rec.request_type, "CONFIG");
    assert_eq!(rec.request_resource, "CONFIG GET maxmemory");
    let (_, rec) = one(Direction::Request, &cmd(&[b"XINFO", b"STREAM", b"s"]));
    assert_eq!(
        (rec.request_type.as_str(), rec.request_resource.as_str()),
        ("XINFO", "XINFO STREAM s")
    );
}

#[test]
fn inline_commands() {
    let (pr, rec) = one(Direction::Request, b"PING\r\n");
    assert_eq!(pr, Progress::Message { consumed: 6, skip: 0 });
    assert_eq!(rec.request_type, "PING");
    assert_eq!(rec.request_resource, "PING");
    assert_eq!(rec.request_length, Some(6));
    let (pr, rec) = one(Direction::Request, b"set  key   value\n");
    assert_eq!(pr, Progress::Message { consumed: 17, skip: 0 });
    assert_eq!(rec.request_type, "SET");
    assert_eq!(rec.request_resource, "set key value");
    assert_eq!(one(Direction::Request, b"\r\n").0, Progress::Skipped { consumed: 2, skip: 0 });
    assert_eq!(one(Direction::Request, b"PIN").0, Progress::NeedMore);
    assert_eq!(one(Direction::Request, b"PI\x00NG\r\n").0, Progress::Invalid);
    let out = run(b"PING\r\nECHO hi\r\n", b"+PONG\r\n$2\r\nhi\r\n", 1);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].response_result, "PONG");
    assert_eq!(out[1].request_resource, "ECHO hi");
    assert_eq!(out[1].response_result, "hi");
}

#[test]
fn pipelined_sixteen_commands() {
    // redis-benchmark -P 16: sixteen requests in one segment, then sixteen replies.
    let mut reqs = Vec::new();
    let mut resps = Vec::new();
    for i in 0..16 {
        let key = format!("key:{i:06}");
        if i % 2 == 0 {
            reqs.extend(cmd(&[b"SET", key.as_bytes(), b"xxx"]));
            resps.extend_from_slice(b"+OK\r\n");
        } else {
            reqs.extend(cmd(&[b"INCR", key.as_bytes()]));
            resps.extend(format!(":{i}\r\n").into_bytes());
        }
    }
    let out = run(&reqs, &resps, 0);
    assert_eq!(out.len(), 16);
    for (i, rec) in out.iter().enumerate() {
        assert_eq!(rec.msg_type, MessageType::Session);
        if i % 2 == 0 {
            assert_eq!(rec.request_type, "SET");
            assert_eq!(rec.response_result, "OK");
        } else {
            assert_eq!(rec.request_type, "INCR");
            assert_eq!(rec.response_result, format!("(integer) {i}"));
        }
        assert_eq!(rec.request_resource.split(' ').nth(1), Some(format!("key:{i:06}").as_str()));
    }
    for chunk in [1, 2, 3, 5, 7, 13, 64, 100] {
        assert_eq!(run(&reqs, &resps, chunk), out, "chunk {chunk}");
    }
}

#[test]
fn error_replies() {
    let rec = reply(b"-ERR unknown command 'FOO', with args beginning with: \r\n");
    assert_eq!(rec.response_status, ResponseStatus::ClientError);
    assert_eq!(rec.response_exception, "ERR unknown command 'FOO', with args beginning with: ");
    assert_eq!(rec.response_result, "");
    let cases: &[(&[u8], ResponseStatus)] = &[
        (b"ERR wrong number of arguments for 'get' command", ResponseStatus::ClientError),
        (
            b"WRONGTYPE Operation against a key holding the wrong kind of value",
            ResponseStatus::ClientError,
        ),
        (b"ERR syntax error", ResponseStatus::ClientError),
        (b"ERR value is not an integer or out of range", ResponseStatus::ClientError),
        (b"NOAUTH Authentication required.", ResponseStatus::ClientError),
        (b"ERR Protocol error: expected '$', got '*'", ResponseStatus::ClientError),
        (b"LOADING Redis is loading the dataset in memory", ResponseStatus::ServerError),
        (b"BUSY Redis is busy running a script.", ResponseStatus::ServerError),
        (b"MASTERDOWN Link with MASTER is down", ResponseStatus::ServerError),
        (b"OOM command not allowed when used memory > 'maxmemory'.", ResponseStatus::ServerError),
        (b"READONLY You can't write against a read only replica.", ResponseStatus::ServerError),
        (b"ERR max number of clients reached", ResponseStatus::ServerError),
    ];
    for (text, status) in cases {
        let mut m = b"-".to_vec();
        m.extend_from_slice(text);
        m.extend_from_slice(b"\r\n");
        let rec = reply(&m);
        assert_eq!(rec.response_status, *status, "{}", String::from_utf8_lossy(text));
        assert_eq!(rec.response_exception.as_bytes(), *text);
    }
    // RESP3 blob error.
    let rec = reply(b"!21\r\nSYNTAX invalid syntax\r\n");
    assert_eq!(rec.response_exception, "SYNTAX invalid syntax");
    assert_eq!(rec.response_status, ResponseStatus::ServerError);
    assert_eq!(rec.version, "RESP3");
}

#[test]
fn nil_and_scalar_replies() {
    assert_eq!(reply(b"$-1\r\n").response_result, "(nil)");
    assert_eq!(reply(b"*-1\r\n").response_result, "(nil)");
    assert_eq!(reply(b"_\r\n").response_result, "(nil)");
    assert_eq!(reply(b"$0\r\n\r\n").response_result, "");
    assert_eq!(reply(b":-42\r\n").response_result, "(integer) -42");
    assert_eq!(reply(b"#t\r\n").response_result, "(true)");
    assert_eq!(reply(b",3.14\r\n").response_result, "3.14");
    assert_eq!(
        reply(b"(3492890328409238509324850943850943825024385\r\n").response_result,
        "(integer) 3492890328409238509324850943850943825024385"
    );
    assert_eq!(reply(b"=15\r\ntxt:Some string\r\n").response_result, "Some string");
    assert_eq!(reply(b"*0\r\n").response_result, "[]");
    assert_eq!(reply(b"%0\r\n").response_result, "{}");
    let rec = reply(b"$-1\r\n");
    assert_eq!(rec.response_status, ResponseStatus::Ok);
    assert_eq!(rec.version, "RESP2");
}

#[test]
fn nested_arrays() {
    let rec = reply(b"*3\r\n$1\r\na\r\n$2\r\nbb\r\n$3\r\nccc\r\n");
    assert_eq!(rec.response_result, "[a, bb, ccc]");
    // SCAN: cursor and keys.
    let rec = reply(b"*2\r\n$1\r\n0\r\n*4\r\n$1\r\nk\r\n$1\r\nh\r\n$1\r\nn\r\n$1\r\nl\r\n");
    assert_eq!(rec.response_result, "[0, [k, h, n, l]]");
    // EXEC with an error inside.
    let rec = reply(b"*2\r\n-ERR value is not an integer or out of range\r\n:1\r\n");
    assert_eq!(rec.response_result, "[(error) ERR value is not an integer or out of range, 1]");
    assert_eq!(rec.response_status, ResponseStatus::Ok);
    // Deep but within bounds; and too deep.
    let mut deep = b"*1\r\n".repeat(64);
    deep.extend_from_slice(b":1\r\n");
    assert_eq!(
        one(Direction::Response, &deep).0,
        Progress::Message { consumed: deep.len(), skip: 0 }
    );
    let mut deeper = b"*1\r\n".repeat(65);
    deeper.extend_from_slice(b":1\r\n");
    assert_eq!(one(Direction::Response, &deeper).0, Progress::Invalid);
    // Nested nil and empty.
    assert_eq!(reply(b"*3\r\n*-1\r\n*0\r\n$-1\r\n").response_result, "[(nil), [], (nil)]");
}

#[test]
fn resp3_hello_map_and_version() {
    let hello = cmd(&[b"HELLO", b"3"]);
    let map = b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:10\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
    let reqs = [cmd(&[b"GET", b"a"]), hello.clone(), cmd(&[b"HGETALL", b"h"])].concat();
    let resps =
        [&b"$1\r\n1\r\n"[..], map, b"%2\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n$2\r\nv2\r\n"]
            .concat();
    let out = run(&reqs, &resps, 0);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].version, "RESP2");
    assert_eq!(out[1].version, "RESP3");
    assert_eq!(out[1].request_resource, "HELLO 3");
    assert_eq!(
        out[1].response_result,
        "{server, redis, version, 7.0.15, proto, 3, id, 10, mode, standalone, role, master, modules, []}"
    );
    assert_eq!(out[2].version, "RESP3");
    assert_eq!(out[2].response_result, "{f1, v1, f2, v2}");
    for chunk in 1..6 {
        assert_eq!(run(&reqs, &resps, chunk), out);
    }
    // Sets, attributes (not shown, not a value of their own).
    assert_eq!(reply(b"~2\r\n+a\r\n+b\r\n").response_result, "[a, b]");
    assert_eq!(
        reply(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2039\r\n:9543\r\n")
            .response_result,
        "[2039, 9543]"
    );
    assert_eq!(reply(b"*2\r\n|1\r\n+ttl\r\n:3\r\n:1\r\n:2\r\n").response_result, "[1, 2]");
}

#[test]
fn pubsub_resp3_pushes_are_not_replies() {
    let reqs =
        [cmd(&[b"HELLO", b"3"]), cmd(&[b"SUBSCRIBE", b"c1", b"c2"]), cmd(&[b"PING"])].concat();
    let resps = [
        &b"%1\r\n$5\r\nproto\r\n:3\r\n"[..],
        b">3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$2\r\nc2\r\n:2\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$5\r\nhello\r\n",
        b"+PONG\r\n",
        b">3\r\n$7\r\nmessage\r\n$2\r\nc2\r\n$3\r\nbye\r\n",
    ]
    .concat();
    for chunk in [0, 1, 4] {
        let out = run(&reqs, &resps, chunk);
        // SUBSCRIBE is reported at once (no reply expected), then HELLO and PING.
        let names: Vec<_> = out.iter().map(|r| r.request_type.as_str()).collect();
        assert_eq!(names, ["SUBSCRIBE", "HELLO", "PING"], "chunk {chunk}");
        assert!(out[0].no_response);
        assert_eq!(out[2].response_result, "PONG");
        assert!(out.iter().all(|r| r.msg_type == MessageType::Session));
    }
}

#[test]
fn pubsub_resp2_messages_are_not_replies() {
    let reqs =
        [cmd(&[b"SUBSCRIBE", b"c1", b"c2"]), cmd(&[b"PING"]), cmd(&[b"UNSUBSCRIBE"])].concat();
    let resps = [
        &b"*3\r\n$9\r\nsubscribe\r\n$2\r\nc1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nc2\r\n:2\r\n"[..],
        b"*3\r\n$7\r\nmessage\r\n$2\r\nc1\r\n$5\r\nhello\r\n",
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n",
        b"*3\r\n$11\r\nunsubscribe\r\n$2\r\nc2\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$2\r\nc1\r\n:0\r\n",
    ]
    .concat();
    for chunk in [0, 1, 3] {
        let mut s = Session::new(RedisParser::new(Transport::Tcp));
        let mut out = Vec::new();
        for c in reqs.chunks(if chunk == 0 { reqs.len() } else { chunk }) {
            feed(&mut s, Direction::Request, c, 0, &mut out);
        }
        for c in resps.chunks(if chunk == 0 { resps.len() } else { chunk }) {
            feed(&mut s, Direction::Response, c, 0, &mut out);
        }
        let names: Vec<_> = out.iter().map(|r| r.request_type.as_str()).collect();
        assert_eq!(names, ["SUBSCRIBE", "UNSUBSCRIBE", "PING"], "chunk {chunk}");
        assert_eq!(out[2].response_result, "[pong, ]");
        assert_eq!(s.stats().orphan_responses, 0);
        assert_eq!(s.pending(), 0);
    }
}

#[test]
fn monitor_feed_is_not_replies() {
    let reqs = cmd(&[b"MONITOR"]);
    let resps = b"+OK\r\n+1700000000.123456 [0 127.0.0.1:50000] \"get\" \"k\"\r\n+1700000000.223456 [0 127.0.0.1:50000] \"ping\"\r\n";
    for chunk in [0, 1, 9] {
        let mut s = Session::new(RedisParser::new(Transport::Tcp));
        let mut out = Vec::new();
        for c in reqs.chunks(if chunk == 0 { reqs.len() } else { chunk }) {
            feed(&mut s, Direction::Request, c, 0, &mut out);
        }
        for c in resps.chunks(if chunk == 0 { resps.len() } else { chunk }) {
            feed(&mut s, Direction::Response, c, 0, &mut out);
        }
        assert_eq!(out.len(), 1, "chunk {chunk}");
        assert_eq!(out[0].request_type, "MONITOR");
        assert_eq!(out[0].response_result, "OK");
        assert_eq!(s.stats().orphan_responses, 0);
    }
}

#[test]
fn big_reply_is_not_buffered() {
    let value = vec![b'x'; 3000];
    let resp = bulk(&value);
    let reqs = [cmd(&[b"GET", b"big"]), cmd(&[b"GET", b"small"])].concat();
    let resps = [resp.clone(), bulk(b"s")].concat();
    let out = run(&reqs, &resps, 0);
    assert_eq!(out.len(), 2);
    let big = &out[0];
    assert_eq!(big.response_result.len(), ELEM_CAP + 3);
    assert!(big.response_result.ends_with("x..."));
    assert_eq!(big.response_length, Some(resp.len() as u32));
    assert!(!big.truncated);
    assert_eq!(out[1].response_result, "s");
    for chunk in [1, 7, 100, 1000, 1460] {
        assert_eq!(run(&reqs, &resps, chunk), out, "chunk {chunk}");
    }
    // The parser asks only for the head of the value.
    let mut p = RedisParser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let head = &resp[..300];
    assert_eq!(
        p.parse(Direction::Response, head, false, &mut rec),
        Progress::Message { consumed: 300, skip: (resp.len() - 300) as u64 }
    );
}

#[test]
fn big_request_argument_is_not_buffered() {
    let value = vec![b'v'; 5000];
    let reqs = [
        cmd(&[b"SET", b"k", &value]),
        cmd(&[b"SET", b"k2", &value, b"EX", b"10"]),
        cmd(&[b"PING"]),
    ]
    .concat();
    let resps = b"+OK\r\n+OK\r\n+PONG\r\n";
    let out = run(&reqs, resps, 0);
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].request_type, "SET");
    assert!(out[0].request_resource.starts_with("SET k vvvv"));
    assert!(out[0].request_resource.ends_with("v..."));
    assert_eq!(out[0].request_length, Some(cmd(&[b"SET", b"k", &value]).len() as u32));
    assert_eq!(out[1].response_result, "OK");
    assert_eq!(out[2].request_type, "PING");
    assert_eq!(out[2].response_result, "PONG");
    for chunk in [1, 9, 1000] {
        assert_eq!(run(&reqs, resps, chunk), out, "chunk {chunk}");
    }
}

#[test]
fn big_nested_values_skip_the_rest_of_the_reply() {
    // MGET big small big: the record stops at the first big value, the rest
    // is skipped as it comes, and the next reply pairs with the next request.
    let big = vec![b'y'; 2000];
    let reqs = [cmd(&[b"MGET", b"a", b"b", b"c"]), cmd(&[b"PING"])].concat();
    let resps = [b"*3\r\n".to_vec(), bulk(&big), bulk(b"small"), bulk(&big), b"+PONG\r\n".to_vec()]
        .concat();
    let out = run(&reqs, &resps, 0);
    assert_eq!(out.len(), 2);
    assert!(out[0].response_result.starts_with("[yyyy"));
    assert!(out[0].response_result.ends_with("y..."));
    assert_eq!(out[1].request_type, "PING");
    assert_eq!(out[1].response_result, "PONG");
    for chunk in [1, 3, 500, 1500] {
        assert_eq!(run(&reqs, &resps, chunk), out, "chunk {chunk}");
    }
}

#[test]
fn long_arrays_of_small_values_stream_through() {
    // KEYS *: 3000 keys, ~40 KB, more than the session buffers.
    let mut resp = b"*3000\r\n".to_vec();
    for i in 0..3000 {
        resp.extend(bulk(format!("user:{i:08}").as_bytes()));
    }
    let reqs = [cmd(&[b"KEYS", b"*"]), cmd(&[b"PING"])].concat();
    let resps = [resp.clone(), b"+PONG\r\n".to_vec()].concat();
    let whole = run(&reqs, &resps, 0);
    assert_eq!(whole.len(), 2);
    assert_eq!(whole[0].response_length, Some(resp.len() as u32));
    assert!(whole[0].response_result.starts_with("[user:00000000, user:00000001"));
    assert_eq!(whole[0].response_result.len(), MAX_FIELD_LEN);
    assert_eq!(whole[1].response_result, "PONG");
    for chunk in [1, 100, 1460] {
        let split = run(&reqs, &resps, chunk);
        assert_eq!(split.len(), 2, "chunk {chunk}");
        assert_eq!(split[0].response_result, whole[0].response_result);
        assert_eq!(split[1], whole[1], "chunk {chunk}");
    }
}

#[test]
fn truncated_captures() {
    let value: Vec<u8> = (0..2000).map(|i| b'a' + (i % 26) as u8).collect();
    let reply_bytes = bulk(&value);
    let arr =
        [b"*4\r\n".to_vec(), bulk(&value[..300]), bulk(&value[..300]), bulk(b"x"), bulk(b"y")]
            .concat();
    let req = cmd(&[b"SET", b"key", &value]);
    for n in [64usize, 256, 1024] {
        // Reply cut.
        let mut s = Session::new(RedisParser::new(Transport::Tcp));
        let mut out = Vec::new();
        feed(&mut s, Direction::Request, &cmd(&[b"GET", b"key"]), 0, &mut out);
        feed(
            &mut s,
            Direction::Response,
            &reply_bytes[..n],
            (reply_bytes.len() - n) as u64,
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response_length, Some(reply_bytes.len() as u32));
        assert!(out[0].response_result.starts_with("abcdef"));
        // The next reply still pairs.
        feed(&mut s, Direction::Request, &cmd(&[b"PING"]), 0, &mut out);
        feed(&mut s, Direction::Response, b"+PONG\r\n", 0, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].response_result, "PONG");
        assert!(!out[1].truncated);

        // Request cut.
        let mut s = Session::new(RedisParser::new(Transport::Tcp));
        let mut out = Vec::new();
        feed(&mut s, Direction::Request, &req[..n], (req.len() - n) as u64, &mut out);
        feed(&mut s, Direction::Response, b"+OK\r\n", 0, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request_type, "SET");
        assert_eq!(out[0].request_length, Some(req.len() as u32));
        assert!(out[0].request_resource.starts_with("SET key abcdef"));
        assert_eq!(out[0].response_result, "OK");

        // Array reply cut.
        if n < arr.len() {
            let mut s = Session::new(RedisParser::new(Transport::Tcp));
            let mut out = Vec::new();
            feed(&mut s, Direction::Request, &cmd(&[b"LRANGE", b"l", b"0", b"-1"]), 0, &mut out);
            feed(&mut s, Direction::Response, &arr[..n], (arr.len() - n) as u64, &mut out);
            assert_eq!(out.len(), 1);
            assert!(out[0].truncated);
            assert!(
                out[0].response_result.starts_with("[abcdef"),
                "{n}: {}",
                out[0].response_result
            );
        }
    }
    // Cut reply at the parser level.
    let mut p = RedisParser::new(Transport::Tcp);
    let mut rec = L7Record::default();
    let small = bulk(&value[..500]);
    assert_eq!(p.parse(Direction::Response, &small[..64], false, &mut rec), Progress::NeedMore);
    assert_eq!(
        p.parse(Direction::Response, &small[..64], true, &mut rec),
        Progress::Message { consumed: 64, skip: (small.len() - 64) as u64 }
    );
    assert!(rec.truncated);
    assert!(rec.response_result.ends_with("..."));
}

#[test]
fn garbage_is_invalid() {
    for b in [
        &b"hello"[..],
        b"\x00\x01\x02",
        b"*x\r\n",
        b"$abc\r\n",
        b":1\rx",
        b"*2\r\n+a\r\n@\r\n",
        b"$3\r\nabcde\r\n",
    ] {
        assert_eq!(
            one(Direction::Response, b).0,
            Progress::Invalid,
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    for b in [
        &b"*2\r\n:1\r\n"[..],
        b"*x\r\n",
        b"*1\r\n$-5\r\n",
        b"\x00\x01\x02\r\n",
        b"*1\r\n$3\r\nabcde",
    ] {
        assert_eq!(
            one(Direction::Request, b).0,
            Progress::Invalid,
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    assert_eq!(one(Direction::Request, b"*0\r\n").0, Progress::Skipped { consumed: 4, skip: 0 });
}

#[test]
fn detect_requests_and_replies() {
    let req = Some(Direction::Request);
    let resp = Some(Direction::Response);
    let cases: &[(&[u8], Option<Direction>)] = &[
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", req),
        (b"*1\r\n$4\r\nping\r\n", req),
        (b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n", req),
        (b"PING\r\n", req),
        (b"info server\r\n", req),
        (b"+OK\r\n", resp),
        (b"+PONG\r\n", resp),
        (b"-ERR unknown command 'FOO'\r\n", resp),
        (b":1\r\n", resp),
        (b"$1\r\nv\r\n", resp),
        (b"$-1\r\n", resp),
        (b"*3\r\n$1\r\na\r\n$2\r\nbb\r\n$3\r\nccc\r\n", resp),
        (b"*2\r\n$1\r\n0\r\n*4\r\n$1\r\nk\r\n", resp),
        (b"*0\r\n", resp),
        (b"%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n", resp),
        // Not Redis.
        (b"*3\r\n$3\r\nSET", req),
        (b"*3\r\n$3\r\nSE", None),
        (b"*3\r\n$3\r\nSETX", None),
        (b"+OK", None),
        (b"+OK\n", None),
        (b"-error\r\n", None),
        (b":12a\r\n", None),
        (b"$5\r\nhello!!\r\n", None),
        (b"PING", None),
        (b"FOO bar\r\n", None),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
        (b"GET /index.html HTTP/1.0\r\n", None),
        (b"HTTP/1.1 200 OK\r\n", None),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", None),
        (b"\x4a\x00\x00\x00\x0a5.7.44\x00", None),
        (b"\x00\x00\x00\x14\x00\x12\x00\x03\x00\x00\x00\x01\x00\x0aclient-one\x00", None),
        (b"\xda\xbb\xc2\x00\x00\x00\x00\x00\x00\x00\x00\x01", None),
        (b"\xe8\xc3\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x07example\x03com\x00\x00\x01\x00\x01", None),
        (b"", None),
    ];
    for (b, want) in cases {
        assert_eq!(detect(b, Transport::Tcp), *want, "{:?}", String::from_utf8_lossy(b));
        assert_eq!(detect(b, Transport::Udp), None);
    }
}

#[test]
fn command_table_is_sorted_and_upper_case() {
    assert!(COMMANDS.windows(2).all(|w| w[0].as_bytes() < w[1].as_bytes()), "unsorted");
    assert!(COMMANDS.iter().all(|c| c.bytes().all(|b| !b.is_ascii_lowercase())));
    for c in ["GET", "set", "Ping", "xreadgroup", "JSON.GET", "ZUNIONSTORE", "ACL"] {
        assert!(is_command(c.as_bytes()), "{c}");
    }
    for c in ["", "GETX", "HTTP/1.1", "POST", "PRI"] {
        assert!(!is_command(c.as_bytes()), "{c}");
    }
}

/// A tiny deterministic generator for the robustness tests.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn never_panics_on_mutations_and_prefixes() {
    let seeds: Vec<Vec<u8>> = vec![
        cmd(&[b"SET", b"k", b"v"]),
        b"PING\r\n".to_vec(),
        b"%2\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n*2\r\n:1\r\n_\r\n".to_vec(),
        b"*2\r\n$1\r\n0\r\n*4\r\n$1\r\nk\r\n$1\r\nh\r\n$1\r\nn\r\n$1\r\nl\r\n".to_vec(),
        b"|1\r\n+a\r\n#t\r\n>2\r\n=5\r\ntxt:a\r\n(12\r\n".to_vec(),
        b"-ERR x\r\n!3\r\nERR\r\n,1.5\r\n~1\r\n+x\r\n".to_vec(),
        [b"*2\r\n".to_vec(), bulk(&[b'z'; 1500]), bulk(b"q")].concat(),
    ];
    let mut rng = Lcg(7);
    let mut rec = L7Record::default();
    for seed in &seeds {
        for n in 0..=seed.len() {
            for at_end in [false, true] {
                for dir in [Direction::Request, Direction::Response] {
                    let _ =
                        RedisParser::new(Transport::Tcp).parse(dir, &seed[..n], at_end, &mut rec);
                }
            }
            let _ = detect(&seed[..n], Transport::Tcp);
        }
        for _ in 0..2000 {
            let mut m = seed.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % m.len();
                m[i] = match rng.next() % 4 {
                    0 => b"*$:+-%>|\r\n0123456789"[(rng.next() % 19) as usize],
                    _ => rng.next() as u8,
                };
            }
            let mut s = Session::new(RedisParser::new(Transport::Tcp));
            for dir in [Direction::Request, Direction::Response] {
                let cut = (rng.next() as usize) % (m.len() + 1);
                s.feed(dir, &m[..cut], 0, 1, &mut |ev| {
                    assert!(ev.record.response_result.len() <= MAX_FIELD_LEN)
                });
                s.feed(dir, &m[cut..], rng.next() % 3, 2, &mut |ev| {
                    assert!(ev.record.request_resource.len() <= MAX_FIELD_LEN)
                });
            }
            let _ = detect(&m, Transport::Tcp);
        }
    }
}

#[test]
#[ignore = "throughput check: cargo test --release -p fathom-protocols --lib redis::tests::throughput -- --ignored --nocapture"]
fn throughput() {
    let set = cmd(&[b"SET", b"user:42:session", b"c0ffee-5e55-10n"]);
    let mut s = Session::new(RedisParser::new(Transport::Tcp));
    let n = 2_000_000u64;
    let t = std::time::Instant::now();
    let mut calls = 0u64;
    for i in 0..n {
        s.feed(Direction::Request, &set, 0, i, &mut |_| {});
        s.feed(Direction::Response, b"+OK\r\n", 0, i, &mut |_| calls += 1);
    }
    let el = t.elapsed();
    assert_eq!(calls, n);
    println!("redis: {:.2} M commands/s (session, SET/+OK)", n as f64 / el.as_secs_f64() / 1e6);
    // Pipelined: 16 commands per segment.
    let reqs: Vec<u8> = (0..16).flat_map(|_| set.clone()).collect();
    let resps: Vec<u8> = b"+OK\r\n".repeat(16);
    let t = std::time::Instant::now();
    for i in 0..n / 16 {
        s.feed(Direction::Request, &reqs, 0, i, &mut |_| {});
        s.feed(Direction::Response, &resps, 0, i, &mut |_| calls += 1);
    }
    let el = t.elapsed();
    println!(
        "redis: {:.2} M commands/s (session, pipelined x16)",
        n as f64 / el.as_secs_f64() / 1e6
    );
}
