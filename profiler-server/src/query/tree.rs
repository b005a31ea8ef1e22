//! Flame graphs, top functions and diffs from [`StackCounts`].
//!
//! Stacks are merged into a trie keyed by frame (name + kernel flag), root first. Nodes whose
//! value is below `total / max_nodes` are folded into their parent's `self`, so a response stays
//! small whatever the selection; children are sorted by name.

use std::collections::HashMap;

use serde::Serialize;

use crate::model::{Frame, StackCounts};

/// Default `max_nodes` of `/flamegraph` and `/diff`.
pub const DEFAULT_MAX_NODES: usize = 2048;

/// A flame graph: the `/flamegraph` response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlameGraph {
    /// Total number of samples.
    pub total: u64,
    /// How much CPU one sample stands for, 0 when unknown.
    pub period_ns: i64,
    /// Always `"samples"`.
    pub unit: &'static str,
    /// The root node, named `total`.
    pub root: FlameNode,
}

/// A diff of two selections: the `/diff` response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiffGraph {
    /// Total samples of the selection.
    pub total: u64,
    /// Total samples of the base selection.
    pub base_total: u64,
    /// How much CPU one sample stands for, 0 when unknown.
    pub period_ns: i64,
    /// Always `"samples"`.
    pub unit: &'static str,
    /// The merged tree; every node has `base_value` and `base_self`.
    pub root: FlameNode,
}

/// A node of a flame graph.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlameNode {
    /// Function name; `total` for the root.
    pub name: String,
    /// Samples in this node and below.
    pub value: u64,
    /// Samples in this node itself (plus folded small children).
    #[serde(rename = "self")]
    pub self_value: u64,
    /// Kernel frame; absent on the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<bool>,
    /// Base selection's `value` (diffs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_value: Option<u64>,
    /// Base selection's `self` (diffs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_self: Option<u64>,
    /// Callees, sorted by name.
    pub children: Vec<FlameNode>,
}

/// The `/top` response.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Top {
    /// Total number of samples.
    pub total: u64,
    /// Functions by `self` descending.
    pub functions: Vec<TopFunction>,
}

/// One function of [`Top`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TopFunction {
    /// Function name.
    pub name: String,
    /// Samples with this function as leaf.
    #[serde(rename = "self")]
    pub self_value: u64,
    /// Samples with this function anywhere on the stack (counted once per stack).
    pub total: u64,
}

/// Merges stacks into a flame graph, folding nodes below `total / max_nodes`.
pub fn flame_graph(counts: &StackCounts, max_nodes: usize) -> FlameGraph {
    let mut trie = Trie::default();
    trie.add(counts, 0);
    let mut root = trie.finish(max_nodes, false);
    root.name = "total".to_owned();
    FlameGraph {
        total: root.value,
        period_ns: counts.period_ns,
        unit: "samples",
        root,
    }
}

/// Merges two selections into one tree whose nodes carry both values.
pub fn diff(current: &StackCounts, base: &StackCounts, max_nodes: usize) -> DiffGraph {
    let mut trie = Trie::default();
    trie.add(current, 0);
    trie.add(base, 1);
    let mut root = trie.finish(max_nodes, true);
    root.name = "total".to_owned();
    DiffGraph {
        total: root.value,
        base_total: root.base_value.unwrap_or(0),
        period_ns: if current.period_ns != 0 {
            current.period_ns
        } else {
            base.period_ns
        },
        unit: "samples",
        root,
    }
}

/// The functions with the most samples of their own, at most `limit`.
pub fn top(counts: &StackCounts, limit: usize) -> Top {
    // Frames with equal names (a function seen from two binaries) are one function here.
    let mut by_frame: HashMap<&Frame, usize> = HashMap::new();
    let mut functions: Vec<TopFunction> = Vec::new();
    let mut index_of = Vec::with_capacity(counts.frames.len());
    for frame in &counts.frames {
        let next = functions.len();
        let index = *by_frame.entry(frame).or_insert(next);
        if index == next {
            functions.push(TopFunction {
                name: frame.name.clone(),
                self_value: 0,
                total: 0,
            });
        }
        index_of.push(index);
    }
    // `seen[f] == stack number + 1` when function f was already counted for that stack, so
    // recursion does not count a sample twice.
    let mut seen = vec![0usize; functions.len()];
    let mut total = 0u64;
    for (n, (stack, count)) in counts.stacks.iter().enumerate() {
        total += count;
        let function_of = |frame: &u32| index_of.get(*frame as usize).copied();
        if let Some(leaf) = stack.last().and_then(function_of) {
            functions[leaf].self_value += count;
        }
        for function in stack.iter().filter_map(function_of) {
            if seen[function] != n + 1 {
                seen[function] = n + 1;
                functions[function].total += count;
            }
        }
    }
    functions.retain(|f| f.total > 0);
    functions.sort_by(|a, b| {
        b.self_value
            .cmp(&a.self_value)
            .then(b.total.cmp(&a.total))
            .then_with(|| a.name.cmp(&b.name))
    });
    functions.truncate(limit);
    Top { total, functions }
}

/// Merged stacks; slot 0 of each value is the selection, slot 1 the diff's base.
///
/// The tree is never built in full: stacks (as indexes into `frames`) are sorted, so the
/// stacks under a node are a contiguous run sharing its path, and its children are the runs
/// of equal frames one level down. [`Trie::finish`] walks only the runs of nodes it keeps;
/// everything below a folded node is summed, never visited.
#[derive(Default)]
struct Trie<'a> {
    /// Distinct frames of every input.
    frames: Vec<&'a Frame>,
    frame_ids: HashMap<&'a Frame, u32>,
    /// Every input stack's frames, back to back.
    path_frames: Vec<u32>,
    paths: Vec<Path>,
}

/// One input stack: `path_frames[start..end]`, root first.
struct Path {
    start: usize,
    end: usize,
    value: [u64; 2],
}

impl<'a> Trie<'a> {
    fn add(&mut self, counts: &'a StackCounts, slot: usize) {
        // Map the input's frame indexes to the trie's (diffs merge two dictionaries).
        let ids: Vec<u32> = counts
            .frames
            .iter()
            .map(|frame| {
                let next = u32::try_from(self.frames.len()).unwrap_or(u32::MAX);
                *self.frame_ids.entry(frame).or_insert_with(|| {
                    self.frames.push(frame);
                    next
                })
            })
            .collect();
        self.paths.reserve(counts.stacks.len());
        for (stack, count) in &counts.stacks {
            let start = self.path_frames.len();
            self.path_frames.extend(
                stack
                    .iter()
                    .filter_map(|frame| ids.get(*frame as usize).copied()),
            );
            let mut value = [0; 2];
            value[slot] = *count;
            self.paths.push(Path {
                start,
                end: self.path_frames.len(),
                value,
            });
        }
    }

    fn finish(mut self, max_nodes: usize, with_base: bool) -> FlameNode {
        let max_nodes = u64::try_from(max_nodes.max(1)).unwrap_or(u64::MAX);
        let frames = &self.path_frames;
        self.paths
            .sort_unstable_by(|a, b| frames[a.start..a.end].cmp(&frames[b.start..b.end]));
        let totals = self
            .paths
            .iter()
            .fold([0u64; 2], |sum, path| add(sum, path.value));
        // A node stays when value / total >= 1 / max_nodes on either side.
        let keep = |value: [u64; 2]| {
            (0..2).any(|slot| {
                value[slot] > 0
                    && u128::from(value[slot]) * u128::from(max_nodes) >= u128::from(totals[slot])
            })
        };
        self.convert(&self.paths, 0, None, totals, &keep, with_base)
    }

    /// The node at `depth` whose stacks are `paths` (all sharing its path) and whose value
    /// is `value`.
    fn convert(
        &self,
        paths: &[Path],
        depth: usize,
        frame: Option<u32>,
        value: [u64; 2],
        keep: &dyn Fn([u64; 2]) -> bool,
        with_base: bool,
    ) -> FlameNode {
        // The stacks ending here sort first: they are a prefix of the others.
        let ends = paths.partition_point(|path| path.end - path.start <= depth);
        let mut self_value = paths[..ends]
            .iter()
            .fold([0u64; 2], |sum, path| add(sum, path.value));
        let mut children = Vec::new();
        let mut rest = &paths[ends..];
        while let Some(first) = rest.first() {
            let child = self.path_frames[first.start + depth];
            let len = rest
                .iter()
                .position(|path| self.path_frames[path.start + depth] != child)
                .unwrap_or(rest.len());
            let (run, next) = rest.split_at(len);
            let child_value = run.iter().fold([0u64; 2], |sum, path| add(sum, path.value));
            if keep(child_value) {
                children.push(self.convert(
                    run,
                    depth + 1,
                    Some(child),
                    child_value,
                    keep,
                    with_base,
                ));
            } else {
                self_value = add(self_value, child_value);
            }
            rest = next;
        }
        children.sort_by(|a, b| a.name.cmp(&b.name).then(a.kernel.cmp(&b.kernel)));
        let frame = frame.and_then(|f| self.frames.get(f as usize));
        FlameNode {
            name: frame.map(|f| f.name.clone()).unwrap_or_default(),
            value: value[0],
            self_value: self_value[0],
            kernel: frame.map(|f| f.kernel),
            base_value: with_base.then_some(value[1]),
            base_self: with_base.then_some(self_value[1]),
            children,
        }
    }
}

/// Adds two values slot by slot.
fn add(a: [u64; 2], b: [u64; 2]) -> [u64; 2] {
    [a[0] + b[0], a[1] + b[1]]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(name: &str) -> Frame {
        Frame {
            name: name.to_owned(),
            kernel: name.ends_with("_[k]"),
        }
    }

    /// Builds stack counts from folded lines `a;b;c 3`.
    fn folded(lines: &[&str]) -> StackCounts {
        let mut counts = StackCounts {
            period_ns: 10_101_010,
            ..StackCounts::default()
        };
        for line in lines {
            let (stack, count) = line.rsplit_once(' ').expect("folded line");
            let ids = stack
                .split(';')
                .filter(|s| !s.is_empty())
                .map(|name| {
                    let f = frame(name);
                    match counts.frames.iter().position(|x| *x == f) {
                        Some(i) => i as u32,
                        None => {
                            counts.frames.push(f);
                            (counts.frames.len() - 1) as u32
                        }
                    }
                })
                .collect();
            counts.stacks.push((ids, count.parse().expect("count")));
        }
        counts
    }

    fn child<'a>(node: &'a FlameNode, name: &str) -> &'a FlameNode {
        node.children
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no child {name} under {}", node.name))
    }

    #[test]
    fn merges_stacks_into_a_tree() {
        let counts = folded(&[
            "main;run;burn_alpha 1",
            "main;run;burn_beta 2",
            "main;run;burn_gamma 3",
            "main;run;burn_gamma 3",
            "main 1",
            "main;read_[k] 2",
        ]);
        let graph = flame_graph(&counts, DEFAULT_MAX_NODES);
        assert_eq!(graph.total, 12);
        assert_eq!(graph.period_ns, 10_101_010);
        assert_eq!(graph.root.name, "total");
        assert_eq!(graph.root.value, 12);
        assert_eq!(graph.root.self_value, 0);
        assert_eq!(graph.root.kernel, None);
        let main = child(&graph.root, "main");
        assert_eq!((main.value, main.self_value), (12, 1));
        let names: Vec<_> = main.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["read_[k]", "run"], "children sorted by name");
        assert_eq!(child(main, "read_[k]").kernel, Some(true));
        let run = child(main, "run");
        assert_eq!((run.value, run.self_value), (9, 0));
        let names: Vec<_> = run.children.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["burn_alpha", "burn_beta", "burn_gamma"]);
        assert_eq!(child(run, "burn_gamma").value, 6);
        assert_eq!(child(run, "burn_gamma").kernel, Some(false));
    }

    #[test]
    fn small_nodes_fold_into_their_parent() {
        let counts = folded(&["a;big 97", "a;small 2", "a;tiny;deeper 1"]);
        // 100 samples, max_nodes 10: nodes under 10 samples fold into `a`.
        let graph = flame_graph(&counts, 10);
        let a = child(&graph.root, "a");
        assert_eq!(a.value, 100);
        assert_eq!(a.self_value, 3);
        assert_eq!(a.children.len(), 1);
        assert_eq!(child(a, "big").value, 97);
        // Every node's value is its self plus its children's values.
        fn check(node: &FlameNode) {
            let sum: u64 = node.children.iter().map(|c| c.value).sum();
            assert_eq!(node.value, node.self_value + sum, "{}", node.name);
            node.children.iter().for_each(check);
        }
        check(&graph.root);
        check(&flame_graph(&counts, DEFAULT_MAX_NODES).root);
    }

    #[test]
    fn empty_input_gives_an_empty_root() {
        let graph = flame_graph(&StackCounts::default(), DEFAULT_MAX_NODES);
        assert_eq!(graph.total, 0);
        assert!(graph.root.children.is_empty());
        let json = serde_json::to_value(&graph).expect("serializes");
        assert_eq!(json["root"]["name"], "total");
        assert_eq!(json["unit"], "samples");
        assert!(json["root"].get("base_value").is_none());
    }

    #[test]
    fn recursion_counts_once_in_top_total() {
        let counts = folded(&["main;f;f;f 4", "main;g 6", "main;f;g 2"]);
        let top = top(&counts, 100);
        assert_eq!(top.total, 12);
        let get = |name: &str| {
            top.functions
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("{name} listed"))
        };
        assert_eq!((get("g").self_value, get("g").total), (8, 8));
        assert_eq!((get("f").self_value, get("f").total), (4, 6));
        assert_eq!((get("main").self_value, get("main").total), (0, 12));
        let names: Vec<_> = top.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["g", "f", "main"]);
        assert_eq!(super::top(&counts, 1).functions.len(), 1);
    }

    #[test]
    fn diff_carries_both_sides() {
        let current = folded(&["main;old 1", "main;new 5"]);
        let base = folded(&["main;old 4", "main;gone 2"]);
        let graph = diff(&current, &base, DEFAULT_MAX_NODES);
        assert_eq!((graph.total, graph.base_total), (6, 6));
        let main = child(&graph.root, "main");
        assert_eq!((main.value, main.base_value), (6, Some(6)));
        let old = child(main, "old");
        assert_eq!(
            (old.value, old.base_value, old.base_self),
            (1, Some(4), Some(4))
        );
        let new = child(main, "new");
        assert_eq!((new.value, new.base_value), (5, Some(0)));
        let gone = child(main, "gone");
        assert_eq!((gone.value, gone.base_value), (0, Some(2)));
        let json = serde_json::to_value(&graph).expect("serializes");
        assert!(json["root"]["children"][0].get("base_self").is_some());
    }

    #[test]
    fn diff_keeps_nodes_large_on_either_side() {
        let current = folded(&["a 1000", "b 1"]);
        let base = folded(&["b 10"]);
        let graph = diff(&current, &base, 10);
        assert!(graph.root.children.iter().any(|c| c.name == "b"));
        let graph = flame_graph(&current, 10);
        assert!(!graph.root.children.iter().any(|c| c.name == "b"));
    }

    /// The previous implementation, kept as the reference of the sort-based merge.
    mod reference {
        use std::collections::HashMap;

        use crate::model::{Frame, StackCounts};
        use crate::query::tree::FlameNode;

        /// The trie this module used before it sorted stacks instead.
        #[derive(Default)]
        pub struct Trie {
            frames: Vec<Frame>,
            frame_ids: HashMap<Frame, u32>,
            pub nodes: Vec<TrieNode>,
        }

        pub struct TrieNode {
            /// Index into `Trie::frames`; unused for the root.
            frame: u32,
            pub value: [u64; 2],
            self_value: [u64; 2],
            children: HashMap<u32, usize>,
        }

        impl TrieNode {
            fn new(frame: u32) -> Self {
                Self {
                    frame,
                    value: [0; 2],
                    self_value: [0; 2],
                    children: HashMap::new(),
                }
            }
        }

        impl Trie {
            pub fn add(&mut self, counts: &StackCounts, slot: usize) {
                if self.nodes.is_empty() {
                    self.nodes.push(TrieNode::new(u32::MAX));
                }
                // Map the input's frame indexes to the trie's (diffs merge two dictionaries).
                let ids: Vec<u32> = counts
                    .frames
                    .iter()
                    .map(|frame| {
                        let next = u32::try_from(self.frames.len()).unwrap_or(u32::MAX);
                        *self.frame_ids.entry(frame.clone()).or_insert_with(|| {
                            self.frames.push(frame.clone());
                            next
                        })
                    })
                    .collect();
                for (stack, count) in &counts.stacks {
                    let mut node = 0;
                    self.nodes[0].value[slot] += count;
                    for frame in stack {
                        let Some(&frame) = ids.get(*frame as usize) else {
                            continue;
                        };
                        let next = self.nodes.len();
                        let child = *self.nodes[node].children.entry(frame).or_insert(next);
                        if child == next {
                            self.nodes.push(TrieNode::new(frame));
                        }
                        node = child;
                        self.nodes[node].value[slot] += count;
                    }
                    self.nodes[node].self_value[slot] += count;
                }
            }

            pub fn finish(&self, max_nodes: usize, with_base: bool) -> FlameNode {
                let max_nodes = u64::try_from(max_nodes.max(1)).unwrap_or(u64::MAX);
                let root = &self.nodes[0];
                let totals = root.value;
                // A node stays when value / total >= 1 / max_nodes on either side.
                let keep = |node: &TrieNode| {
                    (0..2).any(|slot| {
                        node.value[slot] > 0
                            && u128::from(node.value[slot]) * u128::from(max_nodes)
                                >= u128::from(totals[slot])
                    })
                };
                self.convert(0, &keep, with_base)
            }

            fn convert(
                &self,
                index: usize,
                keep: &dyn Fn(&TrieNode) -> bool,
                with_base: bool,
            ) -> FlameNode {
                let node = &self.nodes[index];
                let mut self_value = node.self_value;
                let mut children = Vec::new();
                for &child in node.children.values() {
                    let child_node = &self.nodes[child];
                    if keep(child_node) {
                        children.push(self.convert(child, keep, with_base));
                    } else {
                        self_value[0] += child_node.value[0];
                        self_value[1] += child_node.value[1];
                    }
                }
                children.sort_by(|a, b| a.name.cmp(&b.name).then(a.kernel.cmp(&b.kernel)));
                let frame = self.frames.get(node.frame as usize);
                FlameNode {
                    name: frame.map(|f| f.name.clone()).unwrap_or_default(),
                    value: node.value[0],
                    self_value: self_value[0],
                    kernel: frame.map(|f| f.kernel),
                    base_value: with_base.then_some(node.value[1]),
                    base_self: with_base.then_some(self_value[1]),
                    children,
                }
            }
        }
    }

    /// A tiny xorshift, so the test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// Random stacks over a few frames, with what the merge must cope with: a frame listed
    /// twice, frame indexes out of range, empty stacks, repeated stacks and zero counts.
    fn random_counts(rng: &mut Rng) -> StackCounts {
        let names = ["a", "b", "c", "d_[k]", "e", "b"];
        let mut counts = StackCounts {
            frames: names.iter().map(|n| frame(n)).collect(),
            period_ns: 1,
            ..StackCounts::default()
        };
        for _ in 0..rng.below(40) {
            let depth = rng.below(6);
            let stack = (0..depth).map(|_| rng.below(7) as u32).collect();
            let count = match rng.below(5) {
                0 => 0,
                1 => 1000,
                _ => rng.below(20),
            };
            counts.stacks.push((stack, count));
        }
        if let Some(stack) = counts.stacks.first().cloned() {
            counts.stacks.push(stack);
        }
        counts
    }

    #[test]
    fn sorted_merge_matches_the_trie() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let current = random_counts(&mut rng);
            let base = random_counts(&mut rng);
            for max_nodes in [0, 1, 3, 10, DEFAULT_MAX_NODES] {
                let graph = flame_graph(&current, max_nodes);
                let mut trie = reference::Trie::default();
                trie.add(&current, 0);
                let mut root = trie.finish(max_nodes, false);
                root.name = "total".to_owned();
                assert_eq!(graph.root, root, "{current:?} max_nodes {max_nodes}");
                assert_eq!(graph.total, trie.nodes[0].value[0]);

                let graph = diff(&current, &base, max_nodes);
                let mut trie = reference::Trie::default();
                trie.add(&current, 0);
                trie.add(&base, 1);
                let mut root = trie.finish(max_nodes, true);
                root.name = "total".to_owned();
                assert_eq!(
                    graph.root, root,
                    "{current:?} {base:?} max_nodes {max_nodes}"
                );
                assert_eq!([graph.total, graph.base_total], trie.nodes[0].value);
            }
        }
    }
}
