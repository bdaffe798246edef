//! fathomctl: fleet administration across regions.
