//! fathom-agent: capture -> per-flow state machines -> L7 logs, L4 flows, RED metrics -> sender.
