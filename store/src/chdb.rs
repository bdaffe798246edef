//! Embedded backend: the ClickHouse engine in-process through chDB's
//! `libchdb.so`, loaded at run time (a build never needs it).
//!
//! chDB allows one connection per process (a second `chdb_connect` with
//! another path fails), so one [`EmbeddedStore`] may be open at a time. Its
//! connection lives on a dedicated thread (an actor) fed by a bounded
//! channel: callers encode rows on their own threads and await the engine,
//! and the bounded queue is the back-pressure.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::native::{BlockEncoder, ColumnType, NativeRow};
use crate::rows::{AppMetricRow, Granularity, L4Row, L7Row, NetworkMetricRow, TagRow};
use crate::{
    dedup_token, QueryResult, Result, Retention, RetryPolicy, Store, StoreError, TableRows,
};

/// The chDB release fathom is built and tested against.
pub const CHDB_VERSION: &str = "26.5.3";
/// Where `scripts/fetch-chdb.sh` puts the library unless `FATHOM_CHDB_DIR` is set.
pub const DEFAULT_CHDB_DIR: &str = "/var/tmp/fathom-chdb";

/// Where libchdb.so is looked for: `FATHOM_CHDB_LIB` (a file), else
/// `$FATHOM_CHDB_DIR/libchdb.so`, else `/var/tmp/fathom-chdb/libchdb.so`.
pub fn default_library_path() -> PathBuf {
    if let Some(p) = std::env::var_os("FATHOM_CHDB_LIB") {
        return PathBuf::from(p);
    }
    let dir = std::env::var_os("FATHOM_CHDB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CHDB_DIR));
    dir.join("libchdb.so")
}

fn how_to_get_it(path: &Path, err: &str) -> String {
    format!(
        "cannot load chDB's libchdb.so from {} ({err}). Get it with \
         `bash scripts/fetch-chdb.sh` (puts it in $FATHOM_CHDB_DIR, default {DEFAULT_CHDB_DIR}), \
         or by hand: `npm pack @chdb/lib-linux-x64-gnu@{CHDB_VERSION}` and \
         `tar -xzf chdb-lib-linux-x64-gnu-{CHDB_VERSION}.tgz --strip-components=1 -C <dir> package/libchdb.so`, \
         then point FATHOM_CHDB_DIR at <dir> (or FATHOM_CHDB_LIB at the file)",
        path.display()
    )
}

/// The library's C API (chdb.h of chDB >= 3; the npm package ships no header).
mod ffi {
    use super::*;

    /// `chdb_connection` is a pointer to an opaque struct; `chdb_connect`
    /// returns a pointer to one.
    pub type Conn = *mut c_void;
    pub type Res = *mut c_void;

    pub struct Api {
        pub connect: unsafe extern "C" fn(c_int, *mut *mut c_char) -> *mut Conn,
        pub close_conn: unsafe extern "C" fn(*mut Conn),
        pub query_n: unsafe extern "C" fn(Conn, *const c_char, usize, *const c_char, usize) -> Res,
        pub destroy_result: unsafe extern "C" fn(Res),
        pub result_buffer: unsafe extern "C" fn(Res) -> *mut c_char,
        pub result_length: unsafe extern "C" fn(Res) -> usize,
        pub result_elapsed: unsafe extern "C" fn(Res) -> f64,
        pub result_rows_read: unsafe extern "C" fn(Res) -> u64,
        pub result_bytes_read: unsafe extern "C" fn(Res) -> u64,
        pub result_error: unsafe extern "C" fn(Res) -> *const c_char,
        /// Kept loaded for the life of the process: the engine's background
        /// threads outlive connections, so unloading it would be unsound.
        pub _lib: libloading::Library,
    }

    impl Api {
        pub fn load(path: &Path) -> std::result::Result<Api, String> {
            // SAFETY: loading runs the library's initialisers; libchdb is a
            // self-contained build of ClickHouse that needs only libc.
            let lib = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
            macro_rules! sym {
                ($name:literal) => {
                    // SAFETY: the signatures match chdb.h of the pinned version.
                    *unsafe { lib.get($name) }.map_err(|e| {
                        format!(
                            "{} lacks {} ({e}); expected chDB {}",
                            path.display(),
                            String::from_utf8_lossy(&$name[..$name.len() - 1]),
                            CHDB_VERSION
                        )
                    })?
                };
            }
            Ok(Api {
                connect: sym!(b"chdb_connect\0"),
                close_conn: sym!(b"chdb_close_conn\0"),
                query_n: sym!(b"chdb_query_n\0"),
                destroy_result: sym!(b"chdb_destroy_query_result\0"),
                result_buffer: sym!(b"chdb_result_buffer\0"),
                result_length: sym!(b"chdb_result_length\0"),
                result_elapsed: sym!(b"chdb_result_elapsed\0"),
                result_rows_read: sym!(b"chdb_result_rows_read\0"),
                result_bytes_read: sym!(b"chdb_result_bytes_read\0"),
                result_error: sym!(b"chdb_result_error\0"),
                _lib: lib,
            })
        }
    }
}

/// The loaded library; a failed load is not cached, so a later call with
/// the library in place succeeds.
static API: Mutex<Option<&'static ffi::Api>> = Mutex::new(None);
/// The data directory of the open embedded store, if any.
static OPEN: Mutex<Option<PathBuf>> = Mutex::new(None);

fn api(path: &Path) -> Result<&'static ffi::Api> {
    let mut loaded = API.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(api) = *loaded {
        return Ok(api);
    }
    if !path.exists() {
        return Err(StoreError::LibraryMissing(how_to_get_it(path, "no such file")));
    }
    let api: &'static ffi::Api = Box::leak(Box::new(
        ffi::Api::load(path).map_err(|e| StoreError::LibraryMissing(how_to_get_it(path, &e)))?,
    ));
    *loaded = Some(api);
    Ok(api)
}

/// Configuration of the embedded store.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Where MergeTree tables persist (created if missing).
    pub data_dir: PathBuf,
    /// libchdb.so; default [`default_library_path`].
    pub library: Option<PathBuf>,
    pub retention: Retention,
    pub retry: RetryPolicy,
    /// Statements waiting for the engine before callers wait (back-pressure).
    pub queue_depth: usize,
    /// Inserts are split into statements of at most this many rows.
    pub max_rows_per_insert: usize,
}

impl EmbeddedConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            library: None,
            retention: Retention::default(),
            retry: RetryPolicy::default(),
            queue_depth: 4,
            max_rows_per_insert: 1_000_000,
        }
    }
}

struct RawResult {
    body: Vec<u8>,
    elapsed: Duration,
    rows_read: u64,
    bytes_read: u64,
}

struct Request {
    /// SQL (shared so a retry does not copy it).
    statement: Arc<Vec<u8>>,
    /// The file the statement reads, held until the engine is done with it
    /// and handed back with the result: a caller that gives up must not
    /// close it while queued, as its descriptor's number could name
    /// another file by the time the engine opens the path.
    infile: Option<PayloadFile>,
    reply: oneshot::Sender<(Result<RawResult>, Option<PayloadFile>)>,
}

/// Escapes a string for a single-quoted ClickHouse literal.
fn sql_quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

/// Where an insert's payload waits for the engine, which reads it with
/// `INSERT ... FROM INFILE`: an anonymous in-memory file (memfd) named by
/// its `/proc/self/fd` path, or, where that is unavailable, a file in the
/// data directory. Reused from insert to insert: overwriting pages in place
/// costs one copy, while a fresh file per insert also costs creating the
/// file and allocating, zeroing and freeing its pages.
struct PayloadFile {
    file: std::fs::File,
    /// What `FROM INFILE` names.
    path: String,
    /// The fallback file, removed on drop.
    remove: Option<PathBuf>,
}

impl PayloadFile {
    fn create(fallback_dir: &Path) -> Result<PayloadFile> {
        if let Some(f) = Self::memfd() {
            return Ok(f);
        }
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let path = fallback_dir.join(format!(
            "{}-{}.native",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&path).map_err(|e| {
            StoreError::Connection(format!("cannot create {}: {e}", path.display()))
        })?;
        Ok(PayloadFile { file, path: path.to_string_lossy().into_owned(), remove: Some(path) })
    }

    fn memfd() -> Option<PayloadFile> {
        // SAFETY: the name is a valid C string; the returned descriptor is
        // owned by the File from here on.
        let fd = unsafe { libc::memfd_create(c"fathom-insert".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let path = format!("/proc/self/fd/{fd}");
        // Without /proc the engine could not open it.
        std::fs::metadata(&path).ok()?;
        Some(PayloadFile { file, path, remove: None })
    }

    /// Makes the file hold exactly the block `encoder` was filled with;
    /// returns its size.
    fn write_block(&mut self, encoder: &mut BlockEncoder, columns: &[ColumnType]) -> Result<u64> {
        use std::io::{Seek, SeekFrom, Write};
        let io =
            |e: std::io::Error| StoreError::Connection(format!("cannot write {}: {e}", self.path));
        let mut file = &self.file;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        // Large column buffers go to the file as they are; the buffer
        // gathers the small pieces (names, types, small columns).
        let mut out = std::io::BufWriter::with_capacity(WRITE_BUFFER, file);
        encoder.write_to(columns, &mut out).and_then(|()| out.flush()).map_err(io)?;
        drop(out);
        let size = file.stream_position().map_err(io)?;
        self.file.set_len(size).map_err(io)?;
        Ok(size)
    }
}

/// Pieces of a block smaller than this are gathered before written.
const WRITE_BUFFER: usize = 256 << 10;

impl Drop for PayloadFile {
    fn drop(&mut self) {
        if let Some(path) = &self.remove {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How a chunk of rows becomes the columns of a Native block.
type FillFn<T> = fn(
    &mut BlockEncoder,
    &[T],
    &[ColumnType],
) -> std::result::Result<(), crate::rowbinary::EncodeError>;

/// Payload files above this are freed after the insert.
const MAX_KEPT_PAYLOAD: u64 = 512 << 20;

/// A table and the columns a row type writes to it.
type ColumnsKey = (String, &'static [&'static str]);

/// The embedded store: ClickHouse in-process.
pub struct EmbeddedStore {
    tx: Option<mpsc::Sender<Request>>,
    /// Where insert payloads wait for the engine (inside the data directory).
    insert_dir: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
    config: EmbeddedConfig,
    /// Column types of the tables inserted into, for Native blocks.
    columns: Mutex<HashMap<ColumnsKey, Arc<Vec<ColumnType>>>>,
    /// Encoders of finished inserts, for the next ones (fresh column
    /// buffers cost a page fault per 4 KiB).
    encoders: Mutex<Vec<BlockEncoder>>,
    /// Payload files of finished inserts, for the next ones.
    payload_files: Mutex<Vec<PayloadFile>>,
}

/// The engine thread's handle on the connection.
struct Conn {
    api: &'static ffi::Api,
    conn: *mut ffi::Conn,
}

// SAFETY: the connection is only ever used from the engine thread it moves to.
unsafe impl Send for Conn {}

impl Conn {
    fn open(api: &'static ffi::Api, data_dir: &Path) -> Result<Conn> {
        let path = data_dir
            .to_str()
            .ok_or_else(|| StoreError::Connection("data directory is not UTF-8".into()))?;
        let args = [
            CString::new("clickhouse").expect("no NUL"),
            CString::new(format!("--path={path}"))
                .map_err(|_| StoreError::Connection("data directory contains NUL".into()))?,
        ];
        let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid C strings that outlive the call.
        let conn = unsafe { (api.connect)(argv.len() as c_int, argv.as_mut_ptr()) };
        if conn.is_null() || unsafe { (*conn).is_null() } {
            return Err(StoreError::Connection(format!(
                "chdb_connect failed for {path} (is another process using this directory?)"
            )));
        }
        let c = Conn { api, conn };
        // 64-bit integers as JSON numbers: serde_json holds them exactly.
        c.run(b"SET output_format_json_quote_64bit_integers = 0")?;
        Ok(c)
    }

    fn run(&self, statement: &[u8]) -> Result<RawResult> {
        const FORMAT: &[u8] = b"JSONCompact";
        // SAFETY: conn is open (closed only in Drop); statement and format are
        // valid for their lengths; the result is destroyed exactly once below.
        unsafe {
            let res = (self.api.query_n)(
                *self.conn,
                statement.as_ptr() as *const c_char,
                statement.len(),
                FORMAT.as_ptr() as *const c_char,
                FORMAT.len(),
            );
            if res.is_null() {
                return Err(StoreError::BadResult("chdb_query_n returned nothing".into()));
            }
            let err = (self.api.result_error)(res);
            let out = if !err.is_null() {
                let msg = CStr::from_ptr(err).to_string_lossy().into_owned();
                Err(StoreError::from_clickhouse_message(&msg))
            } else {
                let len = (self.api.result_length)(res);
                let buf = (self.api.result_buffer)(res);
                let body = if len == 0 || buf.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(buf as *const u8, len).to_vec()
                };
                Ok(RawResult {
                    body,
                    elapsed: Duration::from_secs_f64((self.api.result_elapsed)(res).max(0.0)),
                    rows_read: (self.api.result_rows_read)(res),
                    bytes_read: (self.api.result_bytes_read)(res),
                })
            };
            (self.api.destroy_result)(res);
            out
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: conn came from chdb_connect and is closed once.
        unsafe { (self.api.close_conn)(self.conn) };
    }
}

impl EmbeddedStore {
    /// Loads libchdb, opens (or creates) the data directory, and creates or
    /// migrates the schema.
    pub async fn open(config: EmbeddedConfig) -> Result<EmbeddedStore> {
        let lib_path = config.library.clone().unwrap_or_else(default_library_path);
        let api = api(&lib_path)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StoreError::Connection(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let data_dir = config
            .data_dir
            .canonicalize()
            .map_err(|e| StoreError::Connection(format!("{}: {e}", config.data_dir.display())))?;
        {
            let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(other) = open.as_ref() {
                return Err(StoreError::AlreadyOpen(other.display().to_string()));
            }
            *open = Some(data_dir.clone());
        }
        let release = || *OPEN.lock().unwrap_or_else(|p| p.into_inner()) = None;
        // Payloads left by a crashed process are garbage: start empty.
        let insert_dir = data_dir.join("fathom_insert_tmp");
        let _ = std::fs::remove_dir_all(&insert_dir);
        if let Err(e) = std::fs::create_dir_all(&insert_dir) {
            release();
            return Err(StoreError::Connection(format!(
                "cannot create {}: {e}",
                insert_dir.display()
            )));
        }
        let (tx, mut rx) = mpsc::channel::<Request>(config.queue_depth.max(1));
        let (ready_tx, ready_rx) = oneshot::channel();
        let dir = data_dir.clone();
        let thread = std::thread::Builder::new()
            .name("chdb".into())
            .spawn(move || {
                let conn = match Conn::open(api, &dir) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        *OPEN.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        return;
                    }
                };
                while let Some(req) = rx.blocking_recv() {
                    let _ = req.reply.send((conn.run(&req.statement), req.infile));
                }
                drop(conn);
                *OPEN.lock().unwrap_or_else(|p| p.into_inner()) = None;
            })
            .map_err(|e| {
                release();
                StoreError::Connection(format!("cannot start the chdb thread: {e}"))
            })?;
        let mut store = EmbeddedStore {
            tx: Some(tx),
            insert_dir,
            thread: Some(thread),
            config,
            columns: Mutex::new(HashMap::new()),
            encoders: Mutex::new(Vec::new()),
            payload_files: Mutex::new(Vec::new()),
        };
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StoreError::Closed),
        }
        let retention = store.config.retention;
        let migrated = crate::migrate(&store, &retention).await;
        if let Err(e) = migrated {
            store.shutdown();
            return Err(e);
        }
        Ok(store)
    }

    /// The directory the tables persist in.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    async fn run(&self, statement: Arc<Vec<u8>>) -> Result<RawResult> {
        self.run_with(statement, None).await.0
    }

    /// Runs a statement that reads `infile`, and hands the file back.
    async fn run_with(
        &self,
        statement: Arc<Vec<u8>>,
        infile: Option<PayloadFile>,
    ) -> (Result<RawResult>, Option<PayloadFile>) {
        let Some(tx) = self.tx.as_ref() else {
            return (Err(StoreError::Closed), infile);
        };
        let (reply, rx) = oneshot::channel();
        if let Err(e) = tx.send(Request { statement, infile, reply }).await {
            return (Err(StoreError::Closed), e.0.infile);
        }
        rx.await.unwrap_or((Err(StoreError::Closed), None))
    }

    /// Runs `sql` and returns the engine's output as is: the SQL's own
    /// `FORMAT` clause decides it (JSONCompact when there is none).
    pub async fn query_raw(&self, sql: &str) -> Result<Vec<u8>> {
        Ok(self.run(Arc::new(sql.as_bytes().to_vec())).await?.body)
    }

    /// Inserts rows of any `Row` type into `table` (`db.name`), as Native
    /// blocks (encoded through serde), in chunks of `max_rows_per_insert`,
    /// with retries. The store's own row types take the faster
    /// [`insert_native_dedup`](Self::insert_native_dedup).
    pub async fn insert_rows<T: Serialize + clickhouse::Row>(
        &self,
        table: &str,
        rows: &[T],
    ) -> Result<()> {
        self.insert_rows_dedup(table, rows, None).await
    }

    /// The Native column types of `names` in `table`, from the engine
    /// (cached: the schema only changes when the store opens).
    async fn column_types(
        &self,
        table: &str,
        names: &'static [&'static str],
    ) -> Result<Arc<Vec<ColumnType>>> {
        let key = (table.to_string(), names);
        if let Some(c) = self.columns.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(c.clone());
        }
        let (db, name) = table.split_once('.').unwrap_or(("default", table));
        let r = self
            .query(&format!(
                "SELECT name, type FROM system.columns WHERE database = '{}' AND table = '{}'",
                sql_quote(db),
                sql_quote(name)
            ))
            .await?;
        let types: HashMap<&str, &str> = r
            .rows
            .iter()
            .filter_map(|row| Some((row.first()?.as_str()?, row.get(1)?.as_str()?)))
            .collect();
        let mut cols = Vec::with_capacity(names.len());
        for n in names {
            let ty = types.get(n).ok_or_else(|| {
                StoreError::Encode(format!("{table} has no column {n} (schema out of date?)"))
            })?;
            cols.push(ColumnType::new(n, ty).map_err(|e| StoreError::Encode(e.to_string()))?);
        }
        let cols = Arc::new(cols);
        self.columns.lock().unwrap_or_else(|p| p.into_inner()).insert(key, cols.clone());
        Ok(cols)
    }

    /// [`insert_rows`](Self::insert_rows), with each chunk under the
    /// deduplication token [`dedup_token`]`(token, chunk index)`.
    pub async fn insert_rows_dedup<T: Serialize + clickhouse::Row>(
        &self,
        table: &str,
        rows: &[T],
        token: Option<&str>,
    ) -> Result<()> {
        self.insert_blocks(table, rows, token, BlockEncoder::fill).await
    }

    /// [`insert_rows_dedup`](Self::insert_rows_dedup) for a [`NativeRow`]
    /// type: fields written straight to their columns, no serde.
    pub async fn insert_native_dedup<T: NativeRow + clickhouse::Row>(
        &self,
        table: &str,
        rows: &[T],
        token: Option<&str>,
    ) -> Result<()> {
        self.insert_blocks(table, rows, token, BlockEncoder::fill_native).await
    }

    async fn insert_blocks<T: clickhouse::Row>(
        &self,
        table: &str,
        rows: &[T],
        token: Option<&str>,
        fill: FillFn<T>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns = self.column_types(table, T::COLUMN_NAMES).await?;
        for (part, chunk) in rows.chunks(self.config.max_rows_per_insert.max(1)).enumerate() {
            // Native, not RowBinary: chDB parses a columnar block many
            // times faster. The payload goes through a file, not after the
            // SQL in the query buffer: chDB's client splits inline INSERT
            // data at the first blank line ("\n\n"), which binary data
            // may contain anywhere.
            let mut encoder =
                self.encoders.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
            fill(&mut encoder, chunk, &columns).map_err(|e| StoreError::Encode(e.to_string()))?;
            let pooled = self.payload_files.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let file = match pooled {
                Some(f) => Ok(f),
                None => PayloadFile::create(&self.insert_dir),
            }
            .and_then(|mut f| f.write_block(&mut encoder, &columns).map(|size| (f, size)));
            self.encoders.lock().unwrap_or_else(|p| p.into_inner()).push(encoder);
            let (file, size) = file?;
            // Skip indexes are built when parts merge, not for each
            // inserted part: almost every part is merged soon after, and a
            // merge builds the indexes of its new part over again anyway.
            // Until then a fresh part is read without skipping (it is small).
            let mut settings = String::from(" SETTINGS materialize_skip_indexes_on_insert = 0");
            if let Some(t) = token {
                settings.push_str(&format!(
                    ", insert_deduplicate = 1, insert_deduplication_token = '{}'",
                    sql_quote(&dedup_token(t, part))
                ));
            }
            let statement = Arc::new(
                format!(
                    "INSERT INTO {table} ({}) FROM INFILE '{}'{settings} FORMAT Native",
                    T::COLUMN_NAMES.join(", "),
                    sql_quote(&file.path)
                )
                .into_bytes(),
            );
            let slot = Mutex::new(Some(file));
            let inserted = self
                .config
                .retry
                .run(table, || async {
                    let file = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                    let (r, file) = self.run_with(statement.clone(), file).await;
                    *slot.lock().unwrap_or_else(|p| p.into_inner()) = file;
                    r
                })
                .await;
            if let Some(file) = slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                if size <= MAX_KEPT_PAYLOAD {
                    self.payload_files.lock().unwrap_or_else(|p| p.into_inner()).push(file);
                }
            }
            inserted?;
        }
        Ok(())
    }

    /// Stops the engine thread and closes the connection (also done on drop).
    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    fn max_rows_per_insert(&self) -> usize {
        self.config.max_rows_per_insert.max(1)
    }

    async fn insert_l7(&self, rows: &[L7Row]) -> Result<()> {
        self.insert_native_dedup("flow_log.l7_flow_log", rows, None).await
    }

    async fn insert_l4(&self, rows: &[L4Row]) -> Result<()> {
        self.insert_native_dedup("flow_log.l4_flow_log", rows, None).await
    }

    async fn insert_app_metrics(&self, g: Granularity, rows: &[AppMetricRow]) -> Result<()> {
        self.insert_native_dedup(g.app_table(), rows, None).await
    }

    async fn insert_network_metrics(
        &self,
        g: Granularity,
        rows: &[NetworkMetricRow],
    ) -> Result<()> {
        self.insert_native_dedup(g.network_table(), rows, None).await
    }

    async fn insert_deduplicated(&self, rows: TableRows<'_>, token: &str) -> Result<()> {
        let (table, t) = (rows.table(), Some(token));
        match rows {
            TableRows::L7(r) => self.insert_native_dedup(table, r, t).await,
            TableRows::L4(r) => self.insert_native_dedup(table, r, t).await,
            TableRows::App(_, r) => self.insert_native_dedup(table, r, t).await,
            TableRows::Network(_, r) => self.insert_native_dedup(table, r, t).await,
        }
    }

    async fn upsert_tags(&self, rows: &[TagRow]) -> Result<()> {
        self.insert_native_dedup("flow_tag.tag_dict", rows, None).await
    }

    async fn query(&self, sql: &str) -> Result<QueryResult> {
        let started = Instant::now();
        let raw = self.run(Arc::new(sql.as_bytes().to_vec())).await?;
        let mut r = QueryResult::from_json_compact(&raw.body, raw.elapsed)?;
        if r.elapsed.is_zero() {
            r.elapsed = started.elapsed();
        }
        if r.rows_read == 0 {
            r.rows_read = raw.rows_read;
            r.bytes_read = raw.bytes_read;
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_are_quoted_for_sql() {
        assert_eq!(super::sql_quote(r"/a/b'c\d"), r"/a/b\'c\\d");
    }
}
