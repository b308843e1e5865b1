"""Prefix trie over the catalogue's token sequences, held as tensors, for catalogue-constrained decoding.

Every item is a token sequence: its semantic-ID tokens (fixed length) or its tokenised title followed by eos
(variable length; the eos keeps a title that is a prefix of another one a distinct path). Decoding may only
follow trie edges, so every finished beam is a real item (TIGER Sec. 3.2 filters invalid IDs afterwards;
LC-Rec and MiniOneRec constrain with a Python dict from prefix to allowed tokens inside
``prefix_allowed_tokens_fn``, one call per beam per step; RecLM-cgen does the same with a trie of titles).

Layout (chosen over a dense ``[num_nodes, vocab]`` table, which for 12k items x 4 levels and a 152k
vocabulary is 37k x 152k = 5.6 GB even as bits): nodes are numbered breadth first, siblings in token order;
node ``n``'s children are edges ``child_ptr[n] : child_ptr[n + 1]`` (CSR), edge ``e`` leads to node ``e + 1``
and carries ``edge_token[e]``. Because of that numbering the edge keys ``parent * vocab + token`` are sorted, so
following a token from a batch of nodes is one ``torch.searchsorted`` (:meth:`CatalogTrie.step`), and listing
the children of a batch of nodes is one gather padded to the widest node at that depth
(:meth:`CatalogTrie.children`). Memory is ``O(total tokens)``; no Python loop over beams or items at decode time.

Exclusions (the user's history): ``item_count[n]`` = items below node ``n``; :meth:`remaining_counts` subtracts a
user's excluded items along their paths, and a child is allowed only while its count is positive. So an
excluded item is never reached and a prefix whose items are all excluded is never entered (a beam that cannot
complete never takes a slot).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessor


class CatalogTrie:
    """Trie of ``item_token_ids`` ``[num_items, max_len]`` (right-padded with -1; row ``i`` = item ``i``).

    Raises ``ValueError`` (naming 1-based item rows) if a row is empty, has a token outside ``[0, vocab_size)``,
    is a gap-padded row, repeats another row, or is a proper prefix of another row (append an end token).
    """

    def __init__(self, item_token_ids: torch.Tensor | np.ndarray, vocab_size: int):
        tokens = np.asarray(torch.as_tensor(item_token_ids).cpu(), dtype=np.int64)
        if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] == 0:
            raise ValueError(f"item_token_ids must be a non-empty [num_items, max_len] matrix; got {tokens.shape}")
        lengths = (tokens >= 0).sum(axis=1)
        padded_right = (tokens >= 0) == (np.arange(tokens.shape[1]) < lengths[:, None])
        for bad, what in ((lengths == 0, "is empty"), (~padded_right.all(axis=1), "has -1 before a token"),
                          (tokens >= vocab_size, f"has a token id >= vocab_size ({vocab_size})"),
                          (tokens < -1, "has a negative token id other than the -1 padding")):
            rows = np.flatnonzero(bad.any(axis=1) if bad.ndim == 2 else bad)
            if len(rows):
                raise ValueError(f"item row {rows[0] + 1} of item_token_ids {what}")
        self.vocab_size, self.max_len, self.num_items = int(vocab_size), int(lengths.max()), len(tokens)
        self.item_lengths = lengths

        order = np.lexsort(tokens[:, ::-1].T)  # lexicographic, -1 padding sorts first
        ordered = tokens[order]
        # node_at[r, t]: node reached by item ordered[r] after t + 1 tokens (-1 past its end). Breadth-first
        # numbering: all depth-1 nodes (in token order), then depth-2 nodes, ...
        node_at = np.full(ordered.shape, -1, dtype=np.int64)
        parents, edge_tokens, depth_starts, next_node = [], [], [1], 1
        for t in range(self.max_len):
            alive = ordered[:, t] >= 0
            changed = np.r_[True, ordered[1:, t] != ordered[:-1, t]]
            if t > 0:
                changed[1:] |= node_at[1:, t - 1] != node_at[:-1, t - 1]
            starts = alive & changed  # rows sharing a prefix are contiguous, so a new node starts here
            ids = next_node + np.cumsum(starts) - 1
            node_at[alive, t] = ids[alive]
            parents.append(node_at[starts, t - 1] if t > 0 else np.zeros(int(starts.sum()), dtype=np.int64))
            edge_tokens.append(ordered[starts, t])
            next_node += int(starts.sum())
            depth_starts.append(next_node)
        self.num_nodes = next_node
        parent = np.concatenate(parents)
        edge_token = np.concatenate(edge_tokens)
        terminal = node_at[np.arange(len(ordered)), lengths[order] - 1]
        item_of_node = np.full(self.num_nodes, -1, dtype=np.int64)
        if len(np.unique(terminal)) != len(terminal):
            _, first, counts = np.unique(terminal, return_index=True, return_counts=True)
            dup = order[first[counts > 1][0]]
            twins = order[terminal == terminal[first[counts > 1][0]]]
            raise ValueError(f"item rows {sorted(int(r) + 1 for r in twins)[:5]} have the same token sequence "
                             f"(item {dup + 1}); items must be distinguishable")
        item_of_node[terminal] = order
        child_count = np.bincount(parent, minlength=self.num_nodes)
        if (child_count[terminal] > 0).any():
            row = order[np.flatnonzero(child_count[terminal] > 0)[0]]
            raise ValueError(f"item row {row + 1}'s token sequence is a proper prefix of another item's; end every "
                             f"sequence with an end token (eos) so both stay decodable")
        item_paths = np.full(tokens.shape, -1, dtype=np.int64)
        item_paths[order] = node_at
        self.child_ptr = torch.as_tensor(np.r_[0, np.cumsum(child_count)])          # [num_nodes + 1]
        self.edge_token = torch.as_tensor(edge_token)                                 # [num_nodes - 1]
        self.edge_key = torch.as_tensor(parent * self.vocab_size + edge_token)        # [num_nodes - 1], sorted
        self.item_of_node = torch.as_tensor(item_of_node)                             # [num_nodes]
        self.item_paths = torch.as_tensor(item_paths)                                 # [num_items, max_len]
        counts = np.bincount(item_paths[item_paths >= 0], minlength=self.num_nodes)
        counts[0] = self.num_items
        self.item_count = torch.as_tensor(counts)                                     # [num_nodes]
        # widest node per depth: the padded width of children() at that depth (host ints: no device sync)
        self.max_children = [int(child_count[a:b].max()) if b > a else 0
                             for a, b in zip([0] + depth_starts[:-1], depth_starts)]
        self.item_token_ids = torch.as_tensor(tokens)
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> "CatalogTrie":
        """Move the tensors to ``device`` (in place); returns ``self``."""
        for name in ("child_ptr", "edge_token", "edge_key", "item_of_node", "item_paths", "item_count",
                     "item_token_ids"):
            setattr(self, name, getattr(self, name).to(device))
        self.device = torch.device(device)
        return self

    def step(self, nodes: torch.LongTensor, tokens: torch.LongTensor) -> torch.LongTensor:
        """Child of each node along its token, ``-1`` where there is no such edge (or the node is ``-1``).
        ``nodes``, ``tokens``: same shape; returns that shape."""
        keys = nodes * self.vocab_size + tokens
        position = torch.searchsorted(self.edge_key, keys).clamp(max=len(self.edge_key) - 1)
        found = (self.edge_key[position] == keys) & (nodes >= 0)
        return torch.where(found, position + 1, -1)

    def walk(self, generated: torch.LongTensor) -> torch.LongTensor:
        """Node reached by each row of ``generated`` ``[B, t]`` from the root (``-1`` = left the trie). Tokens after
        an item's terminal node are ignored (beam search pads finished sequences)."""
        nodes = generated.new_zeros(generated.shape[0])
        for t in range(generated.shape[1]):
            done = self.item_of_node[nodes.clamp(min=0)] >= 0
            nodes = torch.where(done & (nodes >= 0), nodes, self.step(nodes, generated[:, t]))
        return nodes

    def children(self, nodes: torch.LongTensor, depth: int, remaining: torch.Tensor | None = None,
                 users: torch.LongTensor | None = None) -> tuple[torch.LongTensor, torch.LongTensor, torch.BoolTensor]:
        """Children of ``nodes`` (any shape ``S``, all at ``depth`` = tokens consumed): ``(tokens, child nodes,
        valid)``, each ``[*S, D]`` with ``D`` the widest node at that depth; invalid slots hold token 0, node 0.
        With ``remaining`` ``[U, num_nodes]`` (:meth:`remaining_counts`) and ``users`` (``S``-shaped row of
        ``remaining`` per node), children whose items are all excluded are invalid."""
        width = self.max_children[depth] if depth < len(self.max_children) else 0
        if width == 0:
            empty = nodes.new_zeros(*nodes.shape, 0)
            return empty, empty, empty.bool()
        safe = nodes.clamp(min=0)
        start, end = self.child_ptr[safe], self.child_ptr[safe + 1]
        edge = start[..., None] + torch.arange(width, device=nodes.device)
        valid = (edge < end[..., None]) & (nodes[..., None] >= 0)
        edge = torch.where(valid, edge, 0)
        child = torch.where(valid, edge + 1, 0)
        if remaining is not None:
            valid &= remaining[users[..., None].expand_as(child), child] > 0
        return torch.where(valid, self.edge_token[edge], 0), child, valid

    def remaining_counts(self, exclude_items: list[list[int]] | None, num_users: int) -> torch.Tensor | None:
        """``[num_users, num_nodes]`` int32: items below each node once user ``u``'s ``exclude_items[u]`` are
        removed; ``None`` when nothing is excluded. Ids outside ``[0, num_items)`` raise ``ValueError``."""
        if exclude_items is None or not any(len(items) for items in exclude_items):
            return None
        if len(exclude_items) != num_users:
            raise ValueError(f"exclude_items has {len(exclude_items)} lists for {num_users} prompts")
        users = torch.cat([torch.full((len(set(items)),), u, dtype=torch.long)
                           for u, items in enumerate(exclude_items)])
        items = torch.cat([torch.as_tensor(sorted(set(items)), dtype=torch.long) for items in exclude_items])
        if len(items) and (items.min() < 0 or items.max() >= self.num_items):
            bad = int(items[(items < 0) | (items >= self.num_items)][0])
            raise ValueError(f"excluded item index {bad} outside the catalogue [0, {self.num_items})")
        users, items = users.to(self.device), items.to(self.device)
        paths = self.item_paths[items]                                                  # [E, max_len]
        flat = (users[:, None] * self.num_nodes + paths)[paths >= 0]
        removed = torch.bincount(flat, minlength=num_users * self.num_nodes).view(num_users, self.num_nodes)
        removed[:, 0] = torch.bincount(users, minlength=num_users)
        return (self.item_count[None] - removed).to(torch.int32)

    def allowed_tokens(self, generated: torch.LongTensor, remaining: torch.Tensor | None = None,
                       users: torch.LongTensor | None = None) -> torch.BoolTensor:
        """``[B, vocab]`` mask of the tokens that may follow each row of ``generated`` ``[B, t]`` (all ``False`` for
        a row that left the trie or completed an item)."""
        nodes = self.walk(generated)
        tokens, _, valid = self.children(nodes, generated.shape[1], remaining, users)
        mask = torch.zeros(generated.shape[0], self.vocab_size + 1, dtype=torch.bool, device=generated.device)
        mask.scatter_(1, torch.where(valid, tokens, self.vocab_size), True)  # invalid slots hit the spare column
        return mask[:, : self.vocab_size]

    def items_of(self, generated: torch.LongTensor) -> torch.LongTensor:
        """``[B]`` item index of each row of ``generated`` ``[B, t]``, ``-1`` if incomplete or not an item."""
        nodes = self.walk(generated)
        return torch.where(nodes >= 0, self.item_of_node[nodes.clamp(min=0)], -1)


class CatalogConstraintLogitsProcessor(LogitsProcessor):
    """``transformers`` logits processor: scores of tokens the trie forbids become ``-inf``.

    ``input_ids`` ``[batch * num_beams, prompt_length + t]`` (the prompts are left-padded to ``prompt_length``;
    ``0`` when ``generate`` got ``inputs_embeds``); rows ``u * num_beams ... (u + 1) * num_beams - 1`` belong to
    prompt ``u``, whose ``exclude_items[u]`` are never completed. Vectorised over rows (one trie walk of ``t``
    ``searchsorted`` calls per step), unlike the per-beam ``prefix_allowed_tokens_fn`` of LC-Rec / MiniOneRec.
    """

    def __init__(self, trie: CatalogTrie, prompt_length: int, num_beams: int = 1,
                 exclude_items: list[list[int]] | None = None):
        self.trie, self.prompt_length, self.num_beams = trie, prompt_length, num_beams
        self.remaining = trie.remaining_counts(exclude_items, len(exclude_items)) if exclude_items else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        users = torch.arange(input_ids.shape[0], device=input_ids.device) // self.num_beams
        allowed = self.trie.allowed_tokens(generated, self.remaining, users)
        if scores.shape[1] > allowed.shape[1]:  # model vocabulary padded beyond the trie's
            allowed = torch.nn.functional.pad(allowed, (0, scores.shape[1] - allowed.shape[1]))
        return scores.masked_fill(~allowed[:, : scores.shape[1]], float("-inf"))
