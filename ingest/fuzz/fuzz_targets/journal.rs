//! The insert-group journal reader on any bytes (a file a crash or a bad
//! disk left behind): it never panics, and whatever it accepts is a record
//! the writer could have written (written again, it reads back the same).
//! The input is read as it is and as the body of a record with a valid
//! header, so the body's fields are explored past the checksum.
#![no_main]

use fathom_ingest::journal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut framed = b"FJG1".to_vec();
    framed.extend_from_slice(&(data.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    framed.extend_from_slice(data);
    for input in [data, &framed[..]] {
        let Some((token, batches)) = journal::parse(input) else { continue };
        let dir = std::env::temp_dir().join(format!("fathom-fuzz-journal-{}", std::process::id()));
        let path = journal::path_of(&dir, 0);
        let mut j = journal::Journal::open(path.clone()).expect("journal opens");
        j.record(&token, batches.iter()).expect("an accepted group can be written");
        let again = journal::read(&path).expect("readable").expect("a group");
        assert_eq!((again.token, again.batches), (token, batches));
    }
});
