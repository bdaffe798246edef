//! Protobuf messages for agent<->server and server<->server traffic.
