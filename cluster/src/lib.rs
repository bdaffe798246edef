//! Gossip membership (chitchat) and Raft-replicated metadata (openraft).
