"""The in-memory cache of stored contents (services.common.storage.ContentCache)."""
import hashlib

from services.common.storage import ContentCache


def test_a_content_is_found_by_the_hash_the_cache_computed():
    cache = ContentCache(1000)
    digest = cache.add(b"%PDF-1.7 one")
    assert digest == hashlib.sha256(b"%PDF-1.7 one").hexdigest()
    assert cache.get(digest) == b"%PDF-1.7 one"
    assert cache.get(hashlib.sha256(b"another").hexdigest()) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_least_recently_used_go_first_once_over_the_limit():
    cache = ContentCache(100)
    a, b = cache.add(b"a" * 20), cache.add(b"b" * 20)
    assert cache.get(a) is not None  # a is now the most recent
    for i in range(4):
        cache.add(bytes([i]) * 20)  # 120 bytes in all: b, the least recent, is dropped
    assert cache.get(b) is None and cache.get(a) == b"a" * 20
    assert sum(len(cache.get(d) or b"") for d in list(cache._items)) <= 100


def test_an_object_too_large_for_the_cache_or_a_cache_turned_off_keeps_nothing():
    assert ContentCache(100).get(ContentCache(100).add(b"x" * 26)) is None  # over a quarter of the limit
    off = ContentCache(0)
    assert off.get(off.add(b"x")) is None and len(off) == 0


def test_adding_the_same_content_twice_counts_it_once():
    cache = ContentCache(1000)
    cache.add(b"same" * 10)
    cache.add(b"same" * 10)
    assert len(cache) == 1 and cache._size == 40
