#[test]
fn sizes() {
    use std::mem::size_of;
    eprintln!("Flow {}", size_of::<super::conn::Flow>());
    eprintln!("L7State {}", size_of::<super::l7::L7State>());
    eprintln!("Session {}", size_of::<fathom_protocols::Session<fathom_protocols::AnyParser>>());
    eprintln!("AnyParser {}", size_of::<fathom_protocols::AnyParser>());
    eprintln!("L7Record {}", size_of::<fathom_protocols::L7Record>());
    eprintln!("FlowKey {}", size_of::<super::FlowKey>());
    eprintln!("Stream {}", size_of::<super::reasm::Stream>());
}
