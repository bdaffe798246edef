//! AutoTagging sources (kube, cgroup, /proc) and SmartEncoding dictionaries.
