from __future__ import annotations

import uuid

from flock.artifacts import new_id


def test_ids_are_canonical_random_uuid4_strings() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for text in ids[:2_000]:
        parsed = uuid.UUID(text)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower-case, dashed, 36 characters
    # every random bit varies across ids (the fixed version/variant bits aside)
    ints = [uuid.UUID(t).int for t in ids[:2_000]]
    varying = 0
    for bit in range(128):
        values = {(i >> bit) & 1 for i in ints}
        varying += len(values) == 2
    assert varying == 122
