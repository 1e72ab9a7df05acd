"""Prometheus metrics of the xml_curl endpoint (``GET /metrics`` on the same port).

Counters are per process: with several HTTP workers each answers with its own numbers.
Label values are bounded (action kinds, results), never a user or domain name.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from directory_service.lookup.cache import DirectoryCache

RESULTS = ("found", "not_found", "unavailable", "refused")


class _CacheCollector(Collector):
    def __init__(self, cache: DirectoryCache) -> None:
        self.cache = cache

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.cache.stats
        lookups = CounterMetricFamily(
            "cti_directory_cache_lookups", "Directory lookups by cache outcome", labels=["outcome"]
        )
        lookups.add_metric(["hit"], stats.hits)
        lookups.add_metric(["miss"], stats.misses)
        lookups.add_metric(["uncached"], stats.uncached)
        yield lookups
        yield GaugeMetricFamily(
            "cti_directory_cache_enabled",
            "1 when the cache is configured on (directory.cache)",
            value=1.0 if self.cache.enabled else 0.0,
        )
        yield GaugeMetricFamily(
            "cti_directory_cache_live",
            "1 while keyspace notifications are subscribed and the cache is used",
            value=1.0 if self.cache.caching else 0.0,
        )


class DirectoryMetrics:
    def __init__(self, cache: DirectoryCache) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cti_directory_requests",
            "xml_curl directory requests by action and result",
            ["action", "result"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cti_directory_request_seconds",
            "Time to answer an xml_curl directory request",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "cti_directory_redis_errors",
            "Lookups that failed because Redis did not answer in time",
            registry=self.registry,
        )
        self.registry.register(_CacheCollector(cache))
        self._children: dict[tuple[str, str], Counter] = {}

    def count(self, action: str, result: str) -> None:
        child = self._children.get((action, result))
        if child is None:
            child = self._children[(action, result)] = self.requests.labels(action, result)
        child.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
