//! The recorded graph: one node per tracked tensor. A node holds its op,
//! links to its tracked inputs, and only the values its rule declared it
//! saves; it never holds its inputs' buffers otherwise. A leaf holds its
//! accumulated gradient as storage of the leaf's shape.

use std::sync::{Arc, Mutex};

use crate::ops::Op;
use crate::runtime::pool::Storage;

pub(crate) struct Node {
    pub shape: Vec<usize>,
    pub kind: NodeKind,
}

pub(crate) enum NodeKind {
    /// A tensor the user marked with `requires_grad()`; `backward`
    /// accumulates here (`[*shape]` values, on the leaf's device).
    Leaf { grad: Mutex<Option<Arc<Storage>>> },
    Op {
        op: Op,
        inputs: Vec<Input>,
        saved: Vec<Arc<Storage>>,
    },
}

/// One operand of an op: its node when tracked (None: a constant), and its shape.
pub(crate) struct Input {
    pub node: Option<Arc<Node>>,
    pub shape: Vec<usize>,
}

impl Node {
    /// Identity of a node for the length of a pass (nodes are kept alive by it).
    pub fn key(&self) -> usize {
        self as *const Node as usize
    }

    pub fn inputs(&self) -> &[Input] {
        match &self.kind {
            NodeKind::Leaf { .. } => &[],
            NodeKind::Op { inputs, .. } => inputs,
        }
    }
}

impl Drop for Node {
    /// Unlinks long chains iteratively, so dropping a deep graph cannot
    /// overflow the stack through nested `Arc<Node>` drops.
    fn drop(&mut self) {
        let NodeKind::Op { inputs, .. } = &mut self.kind else {
            return;
        };
        let mut stack: Vec<Arc<Node>> = inputs.iter_mut().filter_map(|i| i.node.take()).collect();
        while let Some(node) = stack.pop() {
            if let Ok(mut node) = Arc::try_unwrap(node)
                && let NodeKind::Op { inputs, .. } = &mut node.kind
            {
                stack.extend(inputs.iter_mut().filter_map(|i| i.node.take()));
            }
        }
    }
}
