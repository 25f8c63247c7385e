//! The vendor connector: lists a project's files (then its vector stores) a page at a time,
//! looks items up by id, and deletes them several at a time, each by the vendor's own word.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Result, anyhow};
use futures::stream::{self, StreamExt};
use lethe_core::time::Timestamp;

use super::api::{self, Cursor, Item, ItemKind, Listing};
use super::client::{Client, Reply};
use super::subjects::Mapper;
use super::{Vendor, VendorTarget};
use crate::targets::{Capabilities, Connector, Deletion, ExportSink, Key, Lookup, Row, Value};

/// The listings of one pass, page by page. A listing that does not move on (a cursor it
/// already gave, or page after page of nothing new) ends the pass with an error rather
/// than looping; an id listed twice is read once; with `purposes`, a file of another
/// purpose is not this target's, whatever the API's own filter did (and once the API is
/// seen ignoring the filter, the other purposes' listings, which would only repeat the
/// first, are not read).
struct Pages {
    listings: VecDeque<Listing>,
    cursor: Cursor,
    /// The cursors the current listing has given.
    cursors: HashSet<(Option<String>, Option<String>)>,
    /// Pages in a row that brought no new item.
    stale: u32,
    seen: HashSet<String>,
    purposes: Vec<String>,
    vendor: Vendor,
    /// Ids listed again, and files of other purposes the API returned anyway.
    repeats: u64,
    foreign: u64,
}

/// Pages in a row with nothing new after which a listing is taken to go round for ever.
const STALE_PAGES: u32 = 1_000;

impl Pages {
    fn new(cfg: &VendorTarget, listings: VecDeque<Listing>) -> Pages {
        Pages {
            listings,
            cursor: Cursor::default(),
            cursors: HashSet::new(),
            stale: 0,
            seen: HashSet::new(),
            purposes: cfg.purposes.clone(),
            vendor: cfg.vendor,
            repeats: 0,
            foreign: 0,
        }
    }

    fn done(&self) -> bool {
        self.listings.is_empty()
    }

    /// The current listing goes on from an opaque page token, which may count positions:
    /// deleting before the listing ends could shift the pages and skip items.
    fn opaque(&self) -> bool {
        self.cursor.page.is_some()
    }

    /// The purpose of a file this target does not sweep, if it is one.
    fn foreign_purpose<'i>(&self, item: &'i Item) -> Option<&'i str> {
        if item.kind != ItemKind::File || self.purposes.is_empty() {
            return None;
        }
        match &item.purpose {
            Some(p) if self.purposes.contains(p) => None,
            Some(p) => Some(p),
            None => Some("(none)"),
        }
    }

    /// The next page's items (none may be left after filtering), or `None` at the end.
    fn next(&mut self, client: &Arc<Client>) -> Result<Option<Vec<Item>>> {
        let Some(listing) = self.listings.front().cloned() else {
            return Ok(None);
        };
        let (c, vendor, cursor) = (Arc::clone(client), self.vendor, self.cursor.clone());
        let l = listing.clone();
        let page = crate::io::wait(async move { api::list(&c, vendor, &l, &cursor).await })??;
        let mut items = Vec::with_capacity(page.items.len());
        let mut unfiltered = false;
        for item in page.items {
            if self.foreign_purpose(&item).is_some() {
                self.foreign += 1;
                unfiltered = true;
                continue;
            }
            if let Ok(id) = &item.id
                && !self.seen.insert(id.clone())
            {
                self.repeats += 1;
                continue;
            }
            items.push(item);
        }
        self.stale = if items.is_empty() { self.stale + 1 } else { 0 };
        if unfiltered {
            // The API ignores `purpose`: this listing reads every file; the others would
            // only read them again.
            let current = self.listings.pop_front();
            self.listings
                .retain(|l| !matches!(l, Listing::Files { .. }));
            if let Some(c) = current {
                self.listings.push_front(c);
            }
        }
        match page.next {
            Some(next) if !self.cursors.insert((next.after.clone(), next.page.clone())) => {
                return Err(anyhow!(
                    "{} listing {listing:?} does not move on: it gave a cursor it had given before; stopped rather than read the same pages forever",
                    vendor.name()
                ));
            }
            Some(_) if self.stale >= STALE_PAGES => {
                return Err(anyhow!(
                    "{} listing {listing:?} does not move on: {STALE_PAGES} pages in a row brought nothing new; stopped rather than loop",
                    vendor.name()
                ));
            }
            Some(next) => self.cursor = next,
            None => {
                self.listings.pop_front();
                self.cursor = Cursor::default();
                self.cursors.clear();
                self.stale = 0;
            }
        }
        Ok(Some(items))
    }
}

/// The outcome of one DELETE, before it is an answer.
enum Outcome {
    Done(Deletion),
    /// No definite answer, even after looking the item up: nothing can be said of it.
    Unknown(String),
}

pub struct VendorConnector {
    cfg: VendorTarget,
    /// Opened to delete (an apply); a read-only open refuses every delete.
    write: bool,
    client: Arc<Client>,
    base: std::path::PathBuf,
    /// What is left to list, and where.
    pages: Pages,
    started: bool,
    /// Rows read but not yet handed out, with the kind of item each is.
    buffer: VecDeque<(Row, ItemKind)>,
    /// The kind of each item handed out or looked up, by id: what a delete may name.
    judged: HashMap<String, ItemKind>,
    /// Files in use by running batches and fine-tuning jobs, as last read.
    in_use: HashMap<String, String>,
    mapper: Option<Mapper>,
    /// A subject's ids still to look up (erasure), once read from `subject_map`.
    subject_ids: Option<VecDeque<String>>,
    /// Every id `subject_map` gave for the subject being read.
    mapped: HashSet<String>,
    /// Ids `subject_map` gave that are not this target's (another purpose, a vector store
    /// it does not sweep).
    not_ours: u64,
    required: Vec<String>,
    untagged: u64,
    /// What an export tells of the items an erasure or export read: name, size, purpose.
    described: HashMap<String, serde_json::Map<String, serde_json::Value>>,
}

impl VendorConnector {
    pub fn open(
        cfg: &VendorTarget,
        base: &Path,
        required_tags: &[String],
        write: bool,
    ) -> Result<Self> {
        let client = Client::new(cfg)?;
        Ok(VendorConnector {
            cfg: cfg.clone(),
            write,
            client: Arc::new(client),
            base: base.to_path_buf(),
            pages: Pages::new(cfg, VecDeque::new()),
            started: false,
            buffer: VecDeque::new(),
            judged: HashMap::new(),
            in_use: HashMap::new(),
            mapper: None,
            subject_ids: None,
            mapped: HashSet::new(),
            not_ours: 0,
            required: required_tags
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect(),
            untagged: 0,
            described: HashMap::new(),
        })
    }

    fn vendor(&self) -> Vendor {
        self.cfg.vendor
    }

    /// Every listing a sweep reads: the files (one listing per purpose, when filtered),
    /// then the vector stores.
    fn all_listings(&self) -> VecDeque<Listing> {
        let mut l: VecDeque<Listing> = if self.cfg.purposes.is_empty() {
            [Listing::Files { purpose: None }].into()
        } else {
            self.cfg
                .purposes
                .iter()
                .map(|p| Listing::Files {
                    purpose: Some(p.clone()),
                })
                .collect()
        };
        if self.cfg.vector_stores {
            l.push_back(Listing::VectorStores);
        }
        l
    }

    /// Reads which files running work uses (OpenAI); Anthropic's batches take no files.
    fn refresh_in_use(&mut self) -> Result<()> {
        if self.vendor() != Vendor::OpenAi {
            return Ok(());
        }
        let client = Arc::clone(&self.client);
        self.in_use = crate::io::wait(async move { api::files_in_use(&client).await })??;
        Ok(())
    }

    fn mapper(&mut self) -> Result<Option<&mut Mapper>> {
        if self.mapper.is_none()
            && let Some(map) = &self.cfg.subject_map
        {
            self.mapper = Some(Mapper::open(map, &self.base)?);
        }
        Ok(self.mapper.as_mut())
    }

    /// The row of an item as the vendor described it. `subject` is the one asked for (an
    /// erasure's), else read from `subject_map` or the vector store's metadata.
    fn row(&mut self, item: Item, subject: Option<&str>) -> Row {
        let id = match item.id {
            Ok(id) => id,
            Err(why) => {
                return Row {
                    key: Err(why),
                    ..Row::new(Key::Text(String::new()))
                };
            }
        };
        let mut row = Row::new(Key::Text(id.clone()));
        if let Err(why) = nameable(&id) {
            row.problem = Some(why);
            return row;
        }
        if subject.is_some() {
            let mut d = serde_json::Map::new();
            if let Some(f) = &item.filename {
                d.insert("name".into(), f.clone().into());
            }
            if let Some(b) = item.bytes {
                d.insert("bytes".into(), b.into());
            }
            if let Some(p) = &item.purpose {
                d.insert("purpose".into(), p.clone().into());
            }
            self.described.insert(id.clone(), d);
        }
        if let Some(why) = item.problem {
            row.problem = Some(self.client.scrub(&why));
            return row;
        }
        row.created_at = item.created_at.clone().unwrap_or(Value::Null);
        row.expires_at = item.expires_at.clone().unwrap_or(Value::Null);
        if let Some(level) = self
            .cfg
            .sensitivity_metadata
            .as_ref()
            .and_then(|k| item.metadata.get(&k.to_ascii_lowercase()))
        {
            row.sensitivity = Value::Text(level.clone());
        }
        let subject_key = self.cfg.subject_key.clone();
        row.subject = match (subject, item.kind, &subject_key) {
            (Some(s), ..) => Ok(Some(s.to_string())),
            // A store may say whose it is in its metadata and in subject_map: two owners
            // that disagree cannot be told apart, and are reported, never guessed.
            (None, ItemKind::VectorStore, Some(k)) => {
                let said = item.metadata.get(&k.to_ascii_lowercase()).cloned();
                match (said, self.mapped_subject(&id)) {
                    (Some(m), Ok(Some(s))) if m != s => Err(format!(
                        "its metadata {k} and subject_map.subject_of name different subjects; whose it is cannot be told"
                    )),
                    (Some(m), Ok(_)) => Ok(Some(m)),
                    (None, mapped) => mapped,
                    (Some(_), Err(why)) => Err(why),
                }
            }
            (None, ..) => self.mapped_subject(&id),
        };
        if let Err(why) = &row.subject {
            // Whose it is decides whether a subject's hold keeps it: never judged without.
            row.problem = Some(why.clone());
        }
        if item.kind == ItemKind::File
            && let Some(why) = self.in_use.get(&id)
        {
            row.in_use = Some(why.clone());
        }
        let mut detail = format!("judged {}", item.kind.noun());
        if let Some(p) = &item.purpose {
            detail.push_str(&format!(", purpose {p}"));
        }
        if item.expires_at.is_some() {
            detail.push_str(&format!(", expiry from {}", item.expiry_from));
        }
        row.detail = Some(detail);
        row
    }

    fn mapped_subject(&mut self, id: &str) -> Result<Option<String>, String> {
        match self.mapper() {
            Ok(Some(m)) => m.subject_of(id),
            Ok(None) => Ok(None),
            Err(e) => Err(format!("{e:#}")),
        }
    }

    /// Counts an item lacking its own expiry (a file) or a required tag (a vector store).
    fn tally(&mut self, item: &Item) {
        let untagged = match item.kind {
            ItemKind::File => item.expires_at.is_none(),
            ItemKind::VectorStore => {
                item.expires_at.is_none()
                    || self.required.iter().any(|t| !item.metadata.contains_key(t))
            }
        };
        if untagged {
            self.untagged += 1;
        }
    }

    /// Reads pages until more than `limit` rows wait (or the listings end): the row last
    /// read is the next page's cursor, and is kept back until that page is read, so the
    /// cursor never names an item this sweep deleted.
    fn fill(&mut self, limit: usize) -> Result<()> {
        // An opaque page token is read to the end of its listing before anything is handed
        // out: if it counts positions, a deletion in between would make it skip items.
        while self.buffer.len() <= limit || self.pages.opaque() {
            let Some(items) = self.pages.next(&self.client)? else {
                break;
            };
            for item in items {
                self.tally(&item);
                let kind = item.kind;
                let row = self.row(item, None);
                self.buffer.push_back((row, kind));
            }
        }
        Ok(())
    }

    /// Hands out the next `n` rows read (fewer at the end), those `wanted`, adding them to
    /// what a delete may name. The last row read stays back until the page after it is read
    /// ([`Self::fill`] keeps more than `n`).
    fn hand_out(&mut self, n: usize, wanted: impl Fn(&Row) -> bool) -> Vec<Row> {
        let n = n.min(self.buffer.len());
        let mut rows = Vec::with_capacity(n);
        for (row, kind) in self.buffer.drain(..n) {
            if !wanted(&row) {
                continue;
            }
            if let Ok(k) = &row.key {
                self.judged.insert(k.to_string(), kind);
            }
            rows.push(row);
        }
        rows
    }

    /// Reads items by id: found, gone (404), or unknown; `subject` as for [`Self::row`].
    /// Reads items by id: found, gone (404), or unknown; `Err(why)` for an item that is not
    /// this target's (a vector store without `vector_stores`, a file of a purpose it does
    /// not sweep): another target's holds may be what protects it.
    fn read(
        &mut self,
        ids: &[String],
        subject: Option<&str>,
    ) -> Result<Vec<Result<Lookup, String>>> {
        let client = Arc::clone(&self.client);
        let kinds: Vec<ItemKind> = ids
            .iter()
            .map(|id| {
                self.judged
                    .get(id)
                    .copied()
                    .unwrap_or_else(|| ItemKind::of_id(id))
            })
            .collect();
        let asks: Vec<(String, ItemKind)> = ids.iter().cloned().zip(kinds).collect();
        // An id that cannot be named in a URL, or names a vector store this target does
        // not sweep, is asked of no one.
        let stores = self.cfg.vector_stores;
        let (asks, unasked): (Vec<_>, Vec<_>) = asks.into_iter().partition(|(id, kind)| {
            nameable(id).is_ok() && (*kind == ItemKind::File || stores)
        });
        let unasked: HashMap<String, Result<String, String>> = unasked
            .into_iter()
            .map(|(id, _)| {
                let why = match nameable(&id) {
                    Err(why) => Ok(why),
                    Ok(()) => Err(format!(
                        "{id} is a vector store, and this target does not sweep vector stores"
                    )),
                };
                (id, why)
            })
            .collect();
        let n = self.cfg.deletes_in_flight;
        let vendor = self.vendor();
        let replies: Vec<(ItemKind, Reply)> = crate::io::wait(async move {
            stream::iter(asks)
                .map(|(id, kind)| {
                    let client = Arc::clone(&client);
                    async move { (kind, client.get(&kind.path(&id)).await) }
                })
                .buffered(n)
                .collect()
                .await
        })?;
        let mut replies = replies.into_iter();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let reply = match unasked.get(id) {
                Some(Ok(why)) => {
                    out.push(Ok(Lookup::Unknown(why.clone())));
                    continue;
                }
                Some(Err(not_ours)) => {
                    out.push(Err(not_ours.clone()));
                    continue;
                }
                None => replies.next(),
            };
            out.push(match reply {
                None => Ok(Lookup::Unknown("no answer for this item".into())),
                Some((kind, Reply::Ok(v))) => {
                    let mut item = api::item(vendor, kind, &v);
                    // The id asked for is the one judged and deleted, whatever the answer says.
                    item.id = Ok(id.clone());
                    if let Some(p) = self.pages.foreign_purpose(&item) {
                        out.push(Err(format!(
                            "{id} is a file of purpose {p}, which this target does not sweep"
                        )));
                        continue;
                    }
                    self.judged.insert(id.clone(), kind);
                    Ok(Lookup::Found(self.row(item, subject)))
                }
                Some((_, Reply::NotFound)) => Ok(Lookup::Gone),
                Some((_, Reply::Refused(why) | Reply::Unknown(why))) => Ok(Lookup::Unknown(why)),
            });
        }
        Ok(out)
    }
}

impl Connector for VendorConnector {
    fn capabilities(&self) -> Capabilities {
        let subjects = self.cfg.subject_map.is_some() || self.cfg.subject_key.is_some();
        Capabilities {
            transactions: false,
            subjects,
            export: subjects,
        }
    }

    /// Reaches the vendor read-only: the first page of each listing, and (OpenAI) the
    /// running work. A refused key is a problem named by the variable that holds it.
    fn check_schema(&mut self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        for listing in self.all_listings() {
            let (client, vendor) = (Arc::clone(&self.client), self.vendor());
            let first = crate::io::wait(async move {
                api::list(&client, vendor, &listing, &Cursor::default()).await
            })?;
            if let Err(e) = first {
                problems.push(format!("{e:#}"));
                return Ok(problems);
            }
        }
        if let Err(e) = self.refresh_in_use() {
            problems.push(format!("{e:#}"));
        }
        if self.cfg.subject_map.is_some()
            && let Err(e) = self.mapper()
        {
            problems.push(format!("{e:#}"));
        }
        Ok(problems)
    }

    fn count(&mut self) -> Result<Option<u64>> {
        let mut pages = Pages::new(&self.cfg, self.all_listings());
        let mut n = 0u64;
        while let Some(items) = pages.next(&self.client)? {
            n += items.len() as u64;
        }
        Ok(Some(n))
    }

    /// Every item is a candidate: its expiry is the vendor's word, judged by the engine.
    fn candidates(&mut self, _now: Timestamp, limit: usize) -> Result<Vec<Row>> {
        if !self.started {
            self.started = true;
            self.pages = Pages::new(&self.cfg, self.all_listings());
            self.untagged = 0;
            self.refresh_in_use()?;
        }
        // Only the batch about to be handed out may be deleted next.
        self.judged.clear();
        self.fill(limit)?;
        Ok(self.hand_out(limit, |_| true))
    }

    /// A subject's items: the ids `subject_map` gives (each read from the vendor), then the
    /// vector stores whose metadata names the subject.
    fn of_subject(&mut self, subject: &str, limit: usize) -> Result<Vec<Row>> {
        self.judged.clear();
        if self.subject_ids.is_none() {
            let ids = match self.mapper()? {
                Some(m) => m.ids(subject)?,
                None => Vec::new(),
            };
            self.mapped = ids.iter().cloned().collect();
            self.subject_ids = Some(ids.into());
            self.refresh_in_use()?;
            let stores = if self.cfg.subject_key.is_some() && self.cfg.vector_stores {
                [Listing::VectorStores].into()
            } else {
                VecDeque::new()
            };
            self.pages = Pages::new(&self.cfg, stores);
            // A store subject_map names is read by its id: the listing passes over it.
            self.pages.seen.extend(self.mapped.iter().cloned());
        }
        let mut out = Vec::new();
        while out.len() < limit {
            let ids: Vec<String> = match self.subject_ids.as_mut() {
                Some(q) if !q.is_empty() => {
                    let n = (limit - out.len()).min(q.len());
                    q.drain(..n).collect()
                }
                _ => break,
            };
            let found = self.read(&ids, Some(subject))?;
            for (id, l) in ids.into_iter().zip(found) {
                let l = match l {
                    Ok(l) => l,
                    // Another target's to erase (and to protect): left to it.
                    Err(_) => {
                        self.not_ours += 1;
                        continue;
                    }
                };
                match l {
                    Lookup::Found(r) => out.push(r),
                    // Gone already: nothing of the subject's is left there.
                    Lookup::Gone => {}
                    // Whether it is there cannot be told: reported, never passed over.
                    Lookup::Unknown(why) => {
                        self.judged.insert(id.clone(), ItemKind::of_id(&id));
                        out.push(Row::unusable(Key::Text(id), why));
                    }
                }
            }
        }
        // Vector stores whose metadata names the subject (or whose subject cannot be read:
        // reported, never passed over).
        while out.len() < limit && !(self.pages.done() && self.buffer.is_empty()) {
            let need = limit - out.len();
            self.fill(need)?;
            out.extend(self.hand_out(need, |r| match &r.subject {
                Ok(Some(s)) => s == subject,
                Ok(None) => false,
                Err(_) => true,
            }));
        }
        Ok(out)
    }

    fn lookup(&mut self, keys: &[Key]) -> Result<Vec<Lookup>> {
        self.judged.clear();
        self.refresh_in_use()?;
        let ids: Vec<String> = keys.iter().map(Key::to_string).collect();
        Ok(self
            .read(&ids, None)?
            .into_iter()
            .map(|r| r.unwrap_or_else(Lookup::Unknown))
            .collect())
    }

    /// Deletes by id, several in flight: `Deleted` only when the vendor answered that it
    /// deleted the item, `AlreadyGone` on a 404, and an item whose DELETE had no definite
    /// answer is looked up before anything is said of it.
    fn delete(&mut self, keys: &[Key]) -> Result<Vec<Deletion>> {
        if !self.write {
            anyhow::bail!("the target was opened read-only: nothing is deleted");
        }
        // Work may have started on a file since it was judged: read again what is in use.
        self.refresh_in_use()?;
        let mut plan: Vec<Option<(String, ItemKind)>> = Vec::with_capacity(keys.len());
        let mut out: Vec<Option<Deletion>> = Vec::with_capacity(keys.len());
        for k in keys {
            let id = k.to_string();
            match self.judged.get(&id) {
                _ if nameable(&id).is_err() => {
                    plan.push(None);
                    out.push(Some(Deletion::Failed(
                        nameable(&id).err().unwrap_or_default(),
                    )));
                }
                None => {
                    plan.push(None);
                    out.push(Some(Deletion::Failed(
                        "not judged in the batch just read; kept, and judged again on the next sweep"
                            .into(),
                    )));
                }
                Some(_) if self.in_use.contains_key(&id) => {
                    plan.push(None);
                    out.push(Some(Deletion::Failed(format!(
                        "{} since it was judged; kept, judged again next run",
                        self.in_use[&id]
                    ))));
                }
                Some(kind) => {
                    plan.push(Some((id, *kind)));
                    out.push(None);
                }
            }
        }
        let asks: Vec<(usize, String, ItemKind)> = plan
            .into_iter()
            .enumerate()
            .filter_map(|(i, p)| p.map(|(id, kind)| (i, id, kind)))
            .collect();
        let client = Arc::clone(&self.client);
        let n = self.cfg.deletes_in_flight;
        let vendor = self.vendor();
        let outcomes: Vec<(usize, Outcome)> = crate::io::wait(async move {
            stream::iter(asks)
                .map(|(i, id, kind)| {
                    let client = Arc::clone(&client);
                    async move { (i, delete_one(&client, vendor, &id, kind).await) }
                })
                .buffer_unordered(n)
                .collect()
                .await
        })?;
        let mut unknown = Vec::new();
        for (i, o) in outcomes {
            match o {
                Outcome::Done(d) => out[i] = Some(d),
                Outcome::Unknown(why) => unknown.push(format!("{}: {why}", keys[i])),
            }
        }
        if !unknown.is_empty() {
            // Some may be gone: the batch stays written ahead and the next run looks each
            // item up, rather than recording any of them on a guess.
            return Err(anyhow!(
                "{} could not be told deleted or not: {}",
                unknown.len(),
                unknown.join("; ")
            ));
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Deletion::Failed("no answer for this item".into())))
            .collect())
    }

    fn export_subject(&mut self, _col: &str, subject: &str, each: ExportSink) -> Result<()> {
        self.subject_ids = None;
        loop {
            let rows = self.of_subject(subject, 500)?;
            if rows.is_empty() {
                break;
            }
            // An access request answered without one of the subject's files would be
            // wrong in silence. A file subject_map names as theirs that cannot be read is
            // listed by its id with why; an item whose owner cannot be told is no one's to
            // hand out, and fails the export, naming it.
            for r in &rows {
                let id = r.key.as_ref().map(Key::to_string).unwrap_or_default();
                if let Some(why) = &r.problem
                    && !self.mapped.contains(&id)
                {
                    anyhow::bail!(
                        "{} {id}: {why}; whose it is cannot be told, and the export would be incomplete without it",
                        self.vendor().name()
                    );
                }
            }
            for r in rows {
                let mut obj = serde_json::Map::new();
                if let Some(why) = &r.problem {
                    obj.insert("could_not_be_read".into(), why.clone().into());
                }
                if let Ok(k) = &r.key {
                    obj.insert("id".into(), k.to_string().into());
                    obj.insert(
                        "kind".into(),
                        ItemKind::of_id(&k.to_string()).noun().into(),
                    );
                }
                for (name, v) in [("created_at", &r.created_at), ("expires_at", &r.expires_at)] {
                    if !matches!(v, Value::Null) {
                        obj.insert(name.into(), api::shown(v).into());
                    }
                }
                if let Ok(k) = &r.key
                    && let Some(d) = self.described.remove(&k.to_string())
                {
                    obj.extend(d);
                }
                each(obj)?;
            }
        }
        self.subject_ids = None;
        Ok(())
    }

    fn untagged(&self) -> Option<u64> {
        Some(self.untagged)
    }

    fn retries(&self) -> Option<u64> {
        Some(self.client.retries.total())
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.pages.repeats > 0 {
            notes.push(format!(
                "{} items the vendor listed more than once were read once",
                self.pages.repeats
            ));
        }
        if self.not_ours > 0 {
            notes.push(format!(
                "{} items subject_map names are not this target's (another purpose, or a vector store it does not sweep): left to the target that sweeps them",
                self.not_ours
            ));
        }
        if self.pages.foreign > 0 {
            notes.push(format!(
                "{} files of purposes this target does not sweep were listed anyway (the API did not filter by purpose) and left alone",
                self.pages.foreign
            ));
        }
        let r = &self.client.retries;
        let total = r.total();
        if total > 0 {
            notes.push(format!(
                "{total} {} requests retried ({} rate-limited, {} server errors, {} timeouts)",
                self.vendor().name(),
                r.throttled.load(Ordering::Relaxed),
                r.server_errors.load(Ordering::Relaxed),
                r.timeouts.load(Ordering::Relaxed)
            ));
        }
        notes
    }
}

/// Whether a DELETE's answer confirms the deletion of this id (OpenAI answers
/// `deleted: true`, Anthropic `type: "file_deleted"`, both with the id): `Some(true)`
/// confirmed, `Some(false)` refused (`deleted: false`), `None` unclear (another id, no
/// field saying either way), to be settled by looking the item up.
fn confirms(vendor: Vendor, id: &str, v: &serde_json::Value) -> Option<bool> {
    if v.get("id").and_then(|i| i.as_str()).is_some_and(|i| i != id) {
        return None;
    }
    match vendor {
        Vendor::OpenAi => v.get("deleted").and_then(|d| d.as_bool()),
        Vendor::Anthropic => {
            (v.get("type").and_then(|t| t.as_str()) == Some("file_deleted")).then_some(true)
        }
    }
}

/// Whether an id can be named in a request path: an empty, `.` or `..` id would be read
/// by the URL as another path (the collection itself), whose 404 is no answer for it.
fn nameable(id: &str) -> Result<(), String> {
    if id.is_empty() || id == "." || id == ".." {
        return Err(format!(
            "the id {id:?} cannot be named in a request: it is not read or deleted here; delete it by hand if it is due"
        ));
    }
    Ok(())
}

/// One DELETE, by the vendor's word; an unknown outcome is settled by looking the item up.
async fn delete_one(client: &Client, vendor: Vendor, id: &str, kind: ItemKind) -> Outcome {
    let path = kind.path(id);
    let why = match client.delete(&path).await {
        Reply::Ok(v) => {
            let shown: String = client.scrub(&v.to_string()).chars().take(200).collect();
            match confirms(vendor, id, &v) {
                Some(true) => return Outcome::Done(Deletion::Deleted),
                Some(false) => {
                    return Outcome::Done(Deletion::Failed(format!(
                        "the vendor refused the DELETE ({shown}); kept, judged again next run"
                    )));
                }
                None => format!("the DELETE's answer does not say this item was deleted ({shown})"),
            }
        }
        Reply::NotFound => return Outcome::Done(Deletion::AlreadyGone),
        Reply::Refused(why) => return Outcome::Done(Deletion::Failed(why)),
        Reply::Unknown(why) => why,
    };
    match client.get(&path).await {
        Reply::NotFound => Outcome::Done(Deletion::AlreadyGone),
        Reply::Ok(_) => Outcome::Done(Deletion::Failed(format!(
            "{why}; the {} is still there: kept, judged again next run",
            kind.noun()
        ))),
        Reply::Refused(again) | Reply::Unknown(again) => {
            Outcome::Unknown(format!("{why}; then {again}"))
        }
    }
}
