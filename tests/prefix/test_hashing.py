from __future__ import annotations

import pytest

from promptcache.prefix.hashing import hash_block_tokens, hash_prompt_blocks, root_hash


def test_chain_matches_manual_chaining_and_skips_partial_block() -> None:
    root = root_hash("model", "")
    tokens = list(range(10))
    hashes = hash_prompt_blocks(tokens, block_size=4, root=root)
    first = hash_block_tokens(root, tokens[0:4])
    second = hash_block_tokens(first, tokens[4:8])
    assert hashes == [first, second]
    assert all(len(h) == 32 for h in hashes)


def test_hashes_are_deterministic() -> None:
    root = root_hash("model", "tenant")
    assert hash_prompt_blocks([1, 2, 3, 4], block_size=2, root=root) == hash_prompt_blocks(
        (1, 2, 3, 4), block_size=2, root=root_hash("model", "tenant")
    )


def test_salt_and_model_change_the_root_and_every_block() -> None:
    tokens = list(range(12))
    base = hash_prompt_blocks(tokens, block_size=4, root=root_hash("model", "a"))
    other_salt = hash_prompt_blocks(tokens, block_size=4, root=root_hash("model", "b"))
    other_model = hash_prompt_blocks(tokens, block_size=4, root=root_hash("model2", "a"))
    assert not set(base) & set(other_salt)
    assert not set(base) & set(other_model)


def test_root_encoding_is_unambiguous() -> None:
    assert root_hash("ab", "c") != root_hash("a", "bc")


def test_a_change_in_block_i_changes_hash_i_and_later_only() -> None:
    root = root_hash("model", "")
    tokens = list(range(16))
    changed = list(tokens)
    changed[9] = 999
    a = hash_prompt_blocks(tokens, block_size=4, root=root)
    b = hash_prompt_blocks(changed, block_size=4, root=root)
    assert a[:2] == b[:2]
    assert all(x != y for x, y in zip(a[2:], b[2:], strict=True))


def test_extra_keys_distinguish_equal_tokens() -> None:
    root = root_hash("model", "")
    plain = hash_block_tokens(root, [1, 2])
    assert hash_block_tokens(root, [1, 2], ("image-a",)) != plain
    assert hash_block_tokens(root, [1, 2], ("image-a",)) != hash_block_tokens(
        root, [1, 2], ("image-b",)
    )


def test_large_token_ids_do_not_alias() -> None:
    root = root_hash("model", "")
    assert hash_block_tokens(root, [1 << 32]) != hash_block_tokens(root, [0])


def test_short_prompt_has_no_blocks_and_bad_block_size_is_rejected() -> None:
    root = root_hash("model", "")
    assert hash_prompt_blocks([1, 2, 3], block_size=4, root=root) == []
    with pytest.raises(ValueError, match="block_size"):
        hash_prompt_blocks([1, 2, 3], block_size=0, root=root)
