//! eBPF kernel programs (C, CO-RE) and their aya loader.
