//! The Kademlia record store: libp2p's `MemoryStore` with bounds a hostile peer cannot use against us.
//!
//! libp2p's store counts every provided key together, remote and own: one peer announcing 200,000 content
//! ids fills it, and from then on this node's own `start_providing` fails (a log line, nothing else) and
//! the content it holds cannot be found. A key whose provider list is full silently ignores one more
//! provider, this node included. [`ProviderStore`] wraps it:
//!
//! - each remote peer provides at most [`Limits::per_peer`] keys here (Kademlia only accepts a provider
//!   record from the provider itself, so this is per sender); beyond, its expired records are purged
//!   and, if still at the limit, the record is refused;
//! - a remote record keeps at most [`Limits::addresses`] addresses of at most [`Limits::address_bytes`]
//!   bytes each (a record may carry kilobytes of addresses otherwise);
//! - this node's own records are never refused nor dropped: when all keys are taken, a key provided only
//!   by remote peers is evicted (one of the peer providing the most keys); when a key's provider list is
//!   full, the provider with the most keys is dropped from it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

use libp2p::kad::store::{Error, MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::PeerId;

/// Most provider records kept per content id: more than Kademlia's K (20) so a lookup finds holders on
/// several ISPs, far fewer than a film's 350 holders.
pub const MAX_PROVIDERS_PER_KEY: usize = 64;
/// Most provider records this node keeps in all (its own and remote ones): 300 films a year for several
/// years, each with up to [`MAX_PROVIDERS_PER_KEY`] holders, over the share of keys this node is close to.
pub const MAX_PROVIDED_KEYS: usize = 200_000;
/// Most keys one remote peer provides here: a superseeder holding every film of ten years (300 a year)
/// fits; a peer announcing 200,000 keys does not.
pub const MAX_KEYS_PER_PEER: usize = 4096;
/// Most addresses kept per remote provider record.
pub const MAX_ADDRESSES: usize = 8;
/// Longest address kept in a remote provider record, bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// The bounds of a [`ProviderStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Provider records per key.
    pub per_key: usize,
    /// Keys in all (own and remote).
    pub keys: usize,
    /// Keys one remote peer provides.
    pub per_peer: usize,
    /// Addresses per remote record.
    pub addresses: usize,
    /// Bytes per address.
    pub address_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_key: MAX_PROVIDERS_PER_KEY,
            keys: MAX_PROVIDED_KEYS,
            per_peer: MAX_KEYS_PER_PEER,
            addresses: MAX_ADDRESSES,
            address_bytes: MAX_ADDRESS_BYTES,
        }
    }
}

/// `MemoryStore` with per-peer bounds that never drops this node's own provider records.
pub struct ProviderStore {
    inner: MemoryStore,
    me: PeerId,
    limits: Limits,
    /// The keys each remote peer provides here.
    by_peer: HashMap<PeerId, HashSet<RecordKey>>,
    /// The keys this node provides.
    own: HashSet<RecordKey>,
}

impl std::fmt::Debug for ProviderStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStore")
            .field("peers", &self.by_peer.len())
            .field("own", &self.own.len())
            .finish()
    }
}

impl ProviderStore {
    /// A store for node `me` with the default [`Limits`].
    pub fn new(me: PeerId) -> Self {
        Self::with_limits(me, Limits::default())
    }

    /// A store with the given limits.
    pub fn with_limits(me: PeerId, limits: Limits) -> Self {
        let config = MemoryStoreConfig {
            max_records: 16 * 1024,
            max_value_bytes: 1024,
            max_providers_per_key: limits.per_key,
            max_provided_keys: limits.keys,
        };
        Self {
            inner: MemoryStore::with_config(me, config),
            me,
            limits,
            by_peer: HashMap::new(),
            own: HashSet::new(),
        }
    }

    /// How many keys a remote peer provides here.
    pub fn keys_of(&self, peer: &PeerId) -> usize {
        self.by_peer.get(peer).map_or(0, HashSet::len)
    }

    fn holds(&self, key: &RecordKey, peer: &PeerId) -> bool {
        self.inner.providers(key).iter().any(|p| &p.provider == peer)
    }

    /// The remote provider among `records` that provides the most keys here.
    fn greediest(&self, records: &[ProviderRecord]) -> Option<PeerId> {
        records.iter().map(|r| r.provider).filter(|p| *p != self.me).max_by_key(|p| self.keys_of(p))
    }

    fn forget(&mut self, key: &RecordKey, peer: &PeerId) {
        if let Some(keys) = self.by_peer.get_mut(peer) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_peer.remove(peer);
            }
        }
    }

    /// Drops every remote provider of one key this node does not provide, taken from the keys of the
    /// peer providing the most (the next one if all its keys are also ours): frees one key for an own
    /// record. `false` if there is no such key.
    fn evict_remote_key(&mut self) -> bool {
        let mut peers: Vec<&HashSet<RecordKey>> = self.by_peer.values().collect();
        peers.sort_by_key(|keys| std::cmp::Reverse(keys.len()));
        let Some(key) = peers.iter().find_map(|keys| keys.iter().find(|k| !self.own.contains(*k))).cloned()
        else {
            return false;
        };
        for record in self.inner.providers(&key) {
            self.inner.remove_provider(&key, &record.provider);
            self.forget(&key, &record.provider);
        }
        true
    }

    fn add_own(&mut self, record: ProviderRecord) -> Result<()> {
        let key = record.key.clone();
        if let Err(Error::MaxProvidedKeys) = self.inner.add_provider(record.clone()) {
            if !self.evict_remote_key() {
                return Err(Error::MaxProvidedKeys);
            }
            self.inner.add_provider(record.clone())?;
        }
        if !self.holds(&key, &self.me) {
            // The key's provider list was full: make room by dropping the greediest remote provider.
            let providers = self.inner.providers(&key);
            let Some(victim) = self.greediest(&providers) else { return Err(Error::MaxRecords) };
            self.inner.remove_provider(&key, &victim);
            self.forget(&key, &victim);
            self.inner.add_provider(record)?;
        }
        self.own.insert(key);
        Ok(())
    }

    fn add_remote(&mut self, mut record: ProviderRecord) -> Result<()> {
        let peer = record.provider;
        let key = record.key.clone();
        record.addresses.retain(|a| a.len() <= self.limits.address_bytes);
        record.addresses.truncate(self.limits.addresses);
        if self.by_peer.get(&peer).is_some_and(|keys| keys.contains(&key)) {
            return self.inner.add_provider(record);
        }
        if self.keys_of(&peer) >= self.limits.per_peer {
            self.purge_expired(&peer, Instant::now());
            if self.keys_of(&peer) >= self.limits.per_peer {
                return Err(Error::MaxProvidedKeys);
            }
        }
        self.inner.add_provider(record)?;
        if self.holds(&key, &peer) {
            self.by_peer.entry(peer).or_default().insert(key);
        }
        Ok(())
    }

    /// Drops `peer`'s expired records.
    fn purge_expired(&mut self, peer: &PeerId, now: Instant) {
        let keys: Vec<RecordKey> = self.by_peer.get(peer).into_iter().flatten().cloned().collect();
        for key in keys {
            let expired = self.inner.providers(&key).iter().any(|r| &r.provider == peer && r.is_expired(now));
            if expired {
                self.inner.remove_provider(&key, peer);
                self.forget(&key, peer);
            }
        }
    }
}

impl RecordStore for ProviderStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.inner.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        self.inner.put(r)
    }

    fn remove(&mut self, k: &RecordKey) {
        self.inner.remove(k)
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.inner.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider == self.me {
            self.add_own(record)
        } else {
            self.add_remote(record)
        }
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.inner.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.inner.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.inner.remove_provider(k, p);
        if p == &self.me {
            self.own.remove(k);
        } else {
            self.forget(k, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::Multiaddr;

    use super::*;

    fn key(n: u32) -> RecordKey {
        RecordKey::new(&blake3::hash(&n.to_be_bytes()).as_bytes())
    }

    /// Five years of films (300 a year), each reported by 350 cinemas, all to one node that also holds every
    /// film itself: none of its own records is refused and every film keeps enough holders to be found.
    /// With libp2p's default store (1024 keys in all) the 1025th film would be refused.
    #[test]
    fn the_provider_store_holds_five_years_of_films_for_350_cinemas() {
        let me = PeerId::random();
        let mut store = ProviderStore::new(me);
        let cinemas: Vec<PeerId> = (0..350).map(|_| PeerId::random()).collect();
        for film in 0..1500u32 {
            store.add_provider(ProviderRecord::new(key(film), me, vec![])).unwrap();
            for c in &cinemas {
                // A full provider list ignores newcomers (Sybil mitigation); that is not an error.
                store.add_provider(ProviderRecord::new(key(film), *c, vec![])).unwrap();
            }
            let providers = store.providers(&key(film));
            assert_eq!(providers.len(), MAX_PROVIDERS_PER_KEY, "film {film}");
            assert!(providers.iter().any(|p| p.provider == me), "film {film}: own record dropped");
        }
        assert_eq!(store.provided().count(), 1500);
    }

    /// One peer announcing far more keys than any honest node holds is cut off at the per-peer bound, and
    /// this node's own records still go in (with libp2p's store alone, the flood would fill every key and
    /// the own record would be refused).
    #[test]
    fn one_peer_cannot_fill_the_store() {
        let me = PeerId::random();
        let limits = Limits { keys: 1000, per_peer: 100, ..Limits::default() };
        let mut store = ProviderStore::with_limits(me, limits);
        let flooder = PeerId::random();
        let refused =
            (0..2000).filter(|n| store.add_provider(ProviderRecord::new(key(*n), flooder, vec![])).is_err());
        assert_eq!(refused.count(), 1900);
        assert_eq!(store.keys_of(&flooder), 100);
        store.add_provider(ProviderRecord::new(key(5000), me, vec![])).unwrap();
        assert_eq!(store.provided().count(), 1);
    }

    /// Many Sybil peers together fill every key and every provider list: the node's own records still go
    /// in, at the cost of remote records, and stay.
    #[test]
    fn own_records_are_never_dropped() {
        let me = PeerId::random();
        let limits = Limits { keys: 50, per_key: 4, per_peer: 10, ..Limits::default() };
        let mut store = ProviderStore::with_limits(me, limits);
        let sybils: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
        for (i, s) in sybils.iter().enumerate() {
            for n in 0..10 {
                let _ = store.add_provider(ProviderRecord::new(key((i as u32 * 10 + n) % 50), *s, vec![]));
            }
        }
        assert!(store.providers(&key(0)).len() == 4, "list of key 0 full of sybils");
        // A key with a full provider list, and 20 new keys while all 50 are taken.
        for n in [0].into_iter().chain(1000..1020) {
            store.add_provider(ProviderRecord::new(key(n), me, vec![])).unwrap();
            assert!(store.providers(&key(n)).iter().any(|p| p.provider == me), "own record {n}");
        }
        assert_eq!(store.provided().count(), 21);
        // Remote floods afterwards never push them out.
        for s in &sybils {
            for n in 2000..2010 {
                let _ = store.add_provider(ProviderRecord::new(key(n), *s, vec![]));
            }
        }
        assert_eq!(store.provided().count(), 21);
        for n in [0].into_iter().chain(1000..1020) {
            assert!(store.providers(&key(n)).iter().any(|p| p.provider == me), "own record {n}");
        }
    }

    #[test]
    fn remote_addresses_are_bounded() {
        let me = PeerId::random();
        let mut store = ProviderStore::new(me);
        let peer = PeerId::random();
        let long: Multiaddr = format!("/dns4/{}/tcp/1", "a".repeat(250)).parse().unwrap();
        let mut addresses = vec![long];
        addresses.extend((0..20).map(|i| format!("/ip4/10.0.0.{i}/tcp/4710").parse::<Multiaddr>().unwrap()));
        store.add_provider(ProviderRecord::new(key(1), peer, addresses)).unwrap();
        let kept = &store.providers(&key(1))[0].addresses;
        assert_eq!(kept.len(), MAX_ADDRESSES);
        assert!(kept.iter().all(|a| a.len() <= MAX_ADDRESS_BYTES));
    }
}
