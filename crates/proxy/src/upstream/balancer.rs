//! A worker's load balancer over one cluster's hosts, as Envoy's: a priority chosen by
//! the priorities' health (a level with too few healthy hosts in panic, using them all),
//! then a locality by weight (`locality_weighted_lb_config`), then a host by the policy:
//! round robin (weighted by earliest deadline first), least request (power of two
//! choices, or weighted), random, or a hash on a ring (`RING_HASH`) or Maglev table.
//! Rebuilt whenever the hosts or their health change.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use wasmproxy_config::model::{CommonLb, LbPolicy, Locality};

use crate::upstream::hashing::HashTable;
use crate::upstream::health::Health;

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: u64 = 140;

/// What the balancer knows of one host.
pub struct HostView<'a> {
    /// `load_balancing_weight`.
    pub weight: u32,
    /// Its locality's `priority`.
    pub priority: u32,
    /// Its locality.
    pub locality: &'a Locality,
    /// Its locality's `load_balancing_weight` (0 if unset).
    pub locality_weight: u32,
    /// Its health.
    pub health: Health,
    /// Not counted nor used at all (pending its first health check, ...).
    pub excluded: bool,
    /// What a hashing balancer hashes for it (its address, or its hostname).
    pub hash_key: String,
}

/// What a pick goes by: the draw (or hash), the requests in flight to each host, and the
/// least request settings and host weights.
#[derive(Clone, Copy)]
struct Ask<'a> {
    draw: u64,
    active: &'a dyn Fn(usize) -> u32,
    choices: u32,
    bias: f64,
    weights: &'a [u32],
}

/// The hosts a pick chooses among, by index in the cluster's list.
struct Source {
    /// The hosts, by locality when localities are weighted (else one group).
    groups: Vec<Group>,
    /// Earliest deadline first over the groups' weights (one entry per group with weight).
    localities: Option<Edf>,
}

/// One locality's hosts of a source and how the next is picked.
struct Group {
    hosts: Vec<usize>,
    picker: Picker,
}

/// How the next host of a group is picked.
enum Picker {
    /// Round robin over equally weighted hosts.
    RoundRobin(usize),
    /// Weighted round robin.
    Weighted(Edf),
    /// Least request: the fewest requests of `choices` random hosts.
    LeastRequest,
    /// Least request over weighted hosts: earliest deadline first with weights divided by
    /// the requests in flight.
    WeightedLeastRequest(Edf),
    /// Uniformly at random.
    Random,
    /// A hash table (ring or Maglev) over the hosts.
    Hash(HashTable),
}

/// One priority level's hosts.
struct Level {
    healthy: Source,
    degraded: Source,
    all: Source,
    panic: bool,
}

/// The balancer of one cluster on one worker.
pub struct Balancer {
    policy: LbPolicy,
    choice_count: u32,
    active_request_bias: f64,
    levels: Vec<Level>,
    /// Per priority, the share (in percent) of requests its healthy hosts take, then its
    /// degraded hosts.
    healthy_load: Vec<u32>,
    degraded_load: Vec<u32>,
    /// The weights of the hosts, for weighted least request.
    weights: Vec<u32>,
}

/// A host picked, and whether its level was in panic (`lb_healthy_panic`).
pub struct Picked {
    /// Its index in the cluster's list.
    pub index: usize,
    /// Whether it came from a level in panic.
    pub panic: bool,
}

impl Balancer {
    /// A balancer over `hosts` (in the cluster's order) with the cluster's settings.
    pub fn new(policy: LbPolicy, lb: &CommonLb, hosts: &[HostView<'_>]) -> Balancer {
        let top = hosts.iter().map(|h| h.priority).max().map_or(0, |p| p as usize + 1);
        let mut health = vec![0u32; top];
        let mut degraded = vec![0u32; top];
        let mut levels = Vec::with_capacity(top);
        for priority in 0..top {
            let at: Vec<usize> =
                (0..hosts.len()).filter(|&i| hosts[i].priority as usize == priority && !hosts[i].excluded).collect();
            let of = |h: Health| at.iter().copied().filter(|&i| hosts[i].health == h).collect::<Vec<_>>();
            let (healthy_hosts, degraded_hosts) = (of(Health::Healthy), of(Health::Degraded));
            let total = at.len() as u64;
            let share = |n: usize| (OVERPROVISIONING * n as u64).checked_div(total).map_or(0, |s| s.min(100) as u32);
            health[priority] = share(healthy_hosts.len());
            degraded[priority] = share(degraded_hosts.len());
            let usable = if total == 0 {
                0.0
            } else {
                100.0 * (healthy_hosts.len() + degraded_hosts.len()) as f64 / total as f64
            };
            let in_panic = usable < lb.panic_threshold;
            let source = |members: Vec<usize>, by_locality: bool| {
                if by_locality {
                    Source::new(policy, lb, hosts, members, &at)
                } else {
                    Source::single(policy, lb, hosts, members)
                }
            };
            // In panic every host of the level is used, excluded ones too, without localities.
            let every: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].priority as usize == priority).collect();
            levels.push(Level {
                healthy: source(healthy_hosts, true),
                degraded: source(degraded_hosts, true),
                all: source(every, false),
                panic: in_panic,
            });
        }
        let mut balancer = Balancer {
            policy,
            choice_count: lb.choice_count,
            active_request_bias: lb.active_request_bias.unwrap_or(1.0),
            levels,
            healthy_load: vec![0; top],
            degraded_load: vec![0; top],
            weights: hosts.iter().map(|h| h.weight).collect(),
        };
        balancer.spread_load(&health, &degraded, lb.panic_threshold, hosts);
        balancer
    }

    /// Envoy's priority load: each level takes its health's share of the total (capped at
    /// 100), healthy first then degraded, the rest to the first level with hosts; a level
    /// is in panic when the total is under 100 and its own healthy share is under the
    /// threshold; when every level is, the load follows the number of hosts.
    fn spread_load(&mut self, health: &[u32], degraded: &[u32], threshold: f64, hosts: &[HostView<'_>]) {
        let top = health.len();
        if top == 0 {
            return;
        }
        let total = (health.iter().sum::<u32>() + degraded.iter().sum::<u32>()).min(100);
        if total == 0 && threshold == 0.0 {
            // Panic turned off and no host usable: no level in panic, so no host.
            self.levels.iter_mut().for_each(|l| l.panic = false);
            self.healthy_load[0] = 100;
            return;
        }
        for level in &mut self.levels {
            level.panic = total != 100 && level.panic;
        }
        if let Some(total) = std::num::NonZeroU32::new(total) {
            let (first_healthy, left) = distribute(&mut self.healthy_load, health, 100, total.get());
            let (first_degraded, left) = distribute(&mut self.degraded_load, degraded, left, total.get());
            if left > 0 {
                match (first_healthy, first_degraded) {
                    (Some(p), _) => self.healthy_load[p] += left,
                    (None, p) => self.degraded_load[p.unwrap_or(0)] += left,
                }
            }
        }
        if self.levels.iter().all(|l| l.panic) {
            // Every level in panic: load by the number of hosts of each.
            let counts: Vec<u64> =
                (0..top).map(|p| hosts.iter().filter(|h| h.priority as usize == p).count() as u64).collect();
            let all: u64 = counts.iter().sum();
            self.degraded_load.iter_mut().for_each(|l| *l = 0);
            if all == 0 {
                self.healthy_load.iter_mut().for_each(|l| *l = 0);
                self.healthy_load[0] = 100;
                return;
            }
            let all: Vec<u32> = counts.iter().map(|c| (c * 100 / all) as u32).collect();
            let (first, left) = distribute(&mut self.healthy_load, &all, 100, 100);
            if let Some(p) = first {
                self.healthy_load[p] += left;
            }
        }
    }

    /// The next host: `hash` for a hashing policy (a random one if the request gives
    /// none), `active` the requests in flight to a host (least request).
    pub fn pick(&mut self, hash: Option<u64>, active: &dyn Fn(usize) -> u32) -> Option<Picked> {
        let draw = match self.policy {
            LbPolicy::RingHash | LbPolicy::Maglev => hash.unwrap_or_else(crate::random::next_u64),
            _ => crate::random::next_u64(),
        };
        let (priority, healthy) = self.choose_priority(draw)?;
        let level = &mut self.levels[priority];
        let panic = level.panic;
        let hashing = matches!(self.policy, LbPolicy::RingHash | LbPolicy::Maglev);
        let source = if panic {
            &mut level.all
        } else if healthy || hashing {
            &mut level.healthy
        } else {
            &mut level.degraded
        };
        let ask =
            Ask { draw, active, choices: self.choice_count, bias: self.active_request_bias, weights: &self.weights };
        let index = source.pick(&ask)?;
        Some(Picked { index, panic })
    }

    /// Envoy's `choosePriority`: `draw % 100 + 1` against the levels' cumulative loads,
    /// healthy ones first.
    fn choose_priority(&self, draw: u64) -> Option<(usize, bool)> {
        let point = (draw % 100) as u32 + 1;
        let mut sum = 0;
        for (p, load) in self.healthy_load.iter().enumerate() {
            sum += load;
            if point <= sum {
                return Some((p, true));
            }
        }
        for (p, load) in self.degraded_load.iter().enumerate() {
            sum += load;
            if point <= sum {
                return Some((p, false));
            }
        }
        None
    }
}

impl Source {
    /// The hosts `members` as one group, localities not weighted.
    fn single(policy: LbPolicy, lb: &CommonLb, hosts: &[HostView<'_>], members: Vec<usize>) -> Source {
        Source { groups: vec![Group::new(policy, lb, hosts, members)], localities: None }
    }

    /// The hosts `members` (of a level whose hosts are `level`), by locality when
    /// localities are weighted: each locality's weight counts as far as its share of
    /// usable hosts allows (Envoy's effective locality weight); without any locality to
    /// use, every member as one group.
    fn new(policy: LbPolicy, lb: &CommonLb, hosts: &[HostView<'_>], members: Vec<usize>, level: &[usize]) -> Source {
        let hashing = matches!(policy, LbPolicy::RingHash | LbPolicy::Maglev);
        if !lb.locality_weighted || hashing {
            return Source::single(policy, lb, hosts, members);
        }
        let mut places: Vec<&Locality> = level.iter().map(|&i| hosts[i].locality).collect();
        places.sort_by(|a, b| (&a.region, &a.zone, &a.sub_zone).cmp(&(&b.region, &b.zone, &b.sub_zone)));
        places.dedup();
        let (mut groups, mut weights) = (Vec::new(), Vec::new());
        for place in places {
            let total = level.iter().filter(|&&i| hosts[i].locality == place).count();
            let usable: Vec<usize> = members.iter().copied().filter(|&i| hosts[i].locality == place).collect();
            let weight = level.iter().find(|&&i| hosts[i].locality == place).map_or(0, |&i| hosts[i].locality_weight);
            let share = (OVERPROVISIONING as f64 / 100.0 * usable.len() as f64 / total.max(1) as f64).min(1.0);
            let effective = f64::from(weight) * share;
            if effective > 0.0 {
                groups.push(Group::new(policy, lb, hosts, usable));
                weights.push(effective);
            }
        }
        if groups.is_empty() {
            return Source::single(policy, lb, hosts, members);
        }
        Source { groups, localities: Some(Edf::new(&weights)) }
    }

    fn pick(&mut self, ask: &Ask<'_>) -> Option<usize> {
        let group = match &mut self.localities {
            Some(edf) => edf.next(&|_| None)?,
            None => 0,
        };
        self.groups.get_mut(group)?.pick(ask)
    }
}

/// A hashing balancer's host weights: shares of the total, each locality's hosts sharing
/// its weight when localities are weighted (a locality without weight left out).
fn hash_weights(lb: &CommonLb, hosts: &[HostView<'_>], members: &[usize]) -> Vec<f64> {
    if !lb.locality_weighted {
        return members.iter().map(|&i| f64::from(hosts[i].weight)).collect();
    }
    let mut total_locality = 0.0;
    let mut seen: Vec<&Locality> = Vec::new();
    for &i in members {
        if !seen.contains(&hosts[i].locality) {
            seen.push(hosts[i].locality);
            total_locality += f64::from(hosts[i].locality_weight);
        }
    }
    members
        .iter()
        .map(|&i| {
            let place = hosts[i].locality;
            let in_place: f64 =
                members.iter().filter(|&&j| hosts[j].locality == place).map(|&j| f64::from(hosts[j].weight)).sum();
            if total_locality == 0.0 || in_place == 0.0 {
                return 0.0;
            }
            f64::from(hosts[i].weight) * (f64::from(hosts[i].locality_weight) / total_locality) / in_place
        })
        .collect()
}

impl Group {
    fn new(policy: LbPolicy, lb: &CommonLb, hosts: &[HostView<'_>], members: Vec<usize>) -> Group {
        let weights: Vec<f64> = members.iter().map(|&i| f64::from(hosts[i].weight)).collect();
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let picker = match policy {
            LbPolicy::RoundRobin if equal => Picker::RoundRobin(crate::random::index(members.len().max(1))),
            LbPolicy::RoundRobin => Picker::Weighted(Edf::new(&weights)),
            LbPolicy::LeastRequest if equal && lb.active_request_bias.is_none() => Picker::LeastRequest,
            LbPolicy::LeastRequest => Picker::WeightedLeastRequest(Edf::new(&weights)),
            LbPolicy::Random => Picker::Random,
            LbPolicy::RingHash | LbPolicy::Maglev => {
                let weights = hash_weights(lb, hosts, &members);
                let keyed: Vec<(&str, f64)> =
                    members.iter().zip(weights).map(|(&i, w)| (hosts[i].hash_key.as_str(), w)).collect();
                Picker::Hash(HashTable::new(policy, lb, &keyed))
            }
        };
        Group { hosts: members, picker }
    }

    fn pick(&mut self, ask: &Ask<'_>) -> Option<usize> {
        let Ask { draw, active, choices, bias, weights } = *ask;
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        let hosts = &self.hosts;
        let chosen = match &mut self.picker {
            Picker::RoundRobin(next) => {
                let i = *next % n;
                *next = next.wrapping_add(1);
                i
            }
            Picker::Weighted(edf) => edf.next(&|_| None)?,
            Picker::LeastRequest => {
                let mut best = crate::random::index(n);
                for _ in 1..choices {
                    let other = crate::random::index(n);
                    if active(hosts[other]) < active(hosts[best]) {
                        best = other;
                    }
                }
                best
            }
            Picker::WeightedLeastRequest(edf) => {
                let effective = |slot: usize| {
                    let host = hosts[slot];
                    let load = f64::from(active(host)) + 1.0;
                    Some(f64::from(weights[host]) / if bias == 1.0 { load } else { load.powf(bias) })
                };
                edf.next(&effective)?
            }
            // Envoy's random balancer uses the draw that chose the priority.
            Picker::Random => (draw % n as u64) as usize,
            Picker::Hash(table) => table.find(draw)?,
        };
        hosts.get(chosen).copied()
    }
}

/// Earliest deadline first: each entry is due again `1 / weight` after it is picked; of
/// entries due at once, the one added first goes first.
struct Edf {
    queue: BinaryHeap<Due>,
    weights: Vec<f64>,
    now: f64,
    order: u64,
}

struct Due {
    at: f64,
    order: u64,
    slot: usize,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // Reversed: the heap's top is the earliest.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.total_cmp(&self.at).then(other.order.cmp(&self.order))
    }
}

impl Edf {
    /// Entries of `weights` (0 is never picked), started at a random point of the cycle
    /// as Envoy's are, so that workers and restarts do not all start on the same host.
    fn new(weights: &[f64]) -> Edf {
        let mut edf = Edf { queue: BinaryHeap::new(), weights: weights.to_vec(), now: 0.0, order: 0 };
        for (slot, w) in weights.iter().enumerate() {
            if *w > 0.0 {
                edf.push(slot, *w);
            }
        }
        let skip = crate::random::index(weights.len().max(1));
        for _ in 0..skip {
            edf.next(&|_| None);
        }
        edf
    }

    fn push(&mut self, slot: usize, weight: f64) {
        self.order += 1;
        self.queue.push(Due { at: self.now + 1.0 / weight, order: self.order, slot });
    }

    /// The next entry; `weight` may give its weight now (else its configured one).
    fn next(&mut self, weight: &dyn Fn(usize) -> Option<f64>) -> Option<usize> {
        let due = self.queue.pop()?;
        self.now = due.at;
        let w = weight(due.slot).unwrap_or(self.weights[due.slot]);
        if w > 0.0 {
            self.push(due.slot, w);
        }
        Some(due.slot)
    }
}

/// Envoy's `distributeLoad`: each level takes its availability's share of `total` from
/// what is left of `load`; the first level with any availability, and what is left.
fn distribute(load: &mut [u32], availability: &[u32], mut left: u32, total: u32) -> (Option<usize>, u32) {
    let mut first = None;
    for (p, (load, available)) in load.iter_mut().zip(availability).enumerate() {
        if first.is_none() && *available > 0 {
            first = Some(p);
        }
        *load = (available * 100 / total).min(left);
        left -= *load;
    }
    (first, left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(locality: &Locality, priority: u32, weight: u32, health: Health) -> HostView<'_> {
        HostView {
            weight,
            priority,
            locality,
            locality_weight: 1,
            health,
            excluded: false,
            hash_key: format!("10.0.0.{priority}:{weight}"),
        }
    }

    fn counts(balancer: &mut Balancer, n: usize, hosts: usize) -> Vec<usize> {
        let mut seen = vec![0; hosts];
        for _ in 0..n {
            seen[balancer.pick(None, &|_| 0).expect("a host").index] += 1;
        }
        seen
    }

    #[test]
    fn priority_load_follows_health_with_overprovisioning() {
        let here = Locality::default();
        let hosts = [
            host(&here, 0, 1, Health::Healthy),
            host(&here, 0, 1, Health::Unhealthy),
            host(&here, 1, 1, Health::Healthy),
        ];
        let b = Balancer::new(LbPolicy::RoundRobin, &CommonLb::default(), &hosts);
        // Priority 0: 140 * 1/2 = 70; priority 1 takes the other 30.
        assert_eq!((b.healthy_load.clone(), b.degraded_load.clone()), (vec![70, 30], vec![0, 0]));
        assert!(b.levels.iter().all(|l| !l.panic));
    }

    #[test]
    fn a_level_under_the_panic_threshold_uses_every_host() {
        let here = Locality::default();
        let hosts = [
            host(&here, 0, 1, Health::Healthy),
            host(&here, 0, 1, Health::Unhealthy),
            host(&here, 0, 1, Health::Unhealthy),
        ];
        let mut b = Balancer::new(LbPolicy::RoundRobin, &CommonLb::default(), &hosts);
        assert!(b.levels[0].panic, "33% healthy is under 50%");
        let seen = counts(&mut b, 30, 3);
        assert_eq!(seen, vec![10, 10, 10], "in panic every host takes its turn");
        // With the threshold at 0 there is no panic: only the healthy host.
        let never = CommonLb { panic_threshold: 0.0, ..CommonLb::default() };
        let mut b = Balancer::new(LbPolicy::RoundRobin, &never, &hosts);
        assert_eq!(counts(&mut b, 9, 3), vec![9, 0, 0]);
    }

    #[test]
    fn weighted_round_robin_gives_each_host_its_share_over_a_cycle() {
        let here = Locality::default();
        let hosts = [host(&here, 0, 1, Health::Healthy), host(&here, 0, 3, Health::Healthy)];
        let mut b = Balancer::new(LbPolicy::RoundRobin, &CommonLb::default(), &hosts);
        assert_eq!(counts(&mut b, 40, 2), vec![10, 30]);
    }

    #[test]
    fn least_request_avoids_the_busy_host() {
        let here = Locality::default();
        let hosts = [host(&here, 0, 1, Health::Healthy), host(&here, 0, 1, Health::Healthy)];
        let lb = CommonLb { choice_count: 64, ..CommonLb::default() };
        let mut b = Balancer::new(LbPolicy::LeastRequest, &lb, &hosts);
        for _ in 0..20 {
            assert_eq!(b.pick(None, &|i| if i == 0 { 5 } else { 0 }).expect("a host").index, 1);
        }
    }

    #[test]
    fn a_hashing_balancer_keeps_keys_on_their_hosts_when_another_host_goes() {
        let here = Locality::default();
        let mut hosts: Vec<HostView<'_>> = (1..=4).map(|w| host(&here, 0, w, Health::Healthy)).collect();
        for h in &mut hosts {
            h.weight = 1;
        }
        for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
            let lb = CommonLb { maglev_table_size: 65537, ..CommonLb::default() };
            let mut all = Balancer::new(policy, &lb, &hosts);
            let before: Vec<usize> = (0..200u64)
                .map(|k| all.pick(Some(crate::upstream::hashing::xx(&k.to_le_bytes())), &|_| 0).unwrap().index)
                .collect();
            assert!((0..4).all(|h| before.contains(&h)), "{policy:?} spreads keys over every host");
            let mut fewer = hosts.iter().map(|h| HostView { hash_key: h.hash_key.clone(), ..*h }).collect::<Vec<_>>();
            fewer[3].health = Health::Unhealthy;
            let mut three = Balancer::new(policy, &lb, &fewer);
            let after: Vec<usize> = (0..200u64)
                .map(|k| three.pick(Some(crate::upstream::hashing::xx(&k.to_le_bytes())), &|_| 0).unwrap().index)
                .collect();
            let moved = before.iter().zip(&after).filter(|(b, a)| b != a && **b != 3).count();
            assert!(after.iter().all(|h| *h != 3));
            // Few keys of the hosts that stay move (the ring is scaled again, the table
            // filled again), as in Envoy.
            assert!(moved <= 40, "{policy:?} moved {moved} of 200");
        }
    }
}
