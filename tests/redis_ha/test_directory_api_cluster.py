"""The directory gRPC API writing through a 3-master Redis Cluster: every kind of write,
on domains spread over all masters, in the seed layout, each still one transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import field_mask_pb2

from cti import redis_keys
from cti.redis_client import connect
from cti.v1 import directory_pb2 as pb
from tests.directory.grpc_fixtures import Api, start_api

DOMAINS = [f"d{i}.example" for i in range(6)]  # hash to different masters


@pytest.fixture(name="cluster_api")
def cluster_api_fixture(cluster_url: str) -> Iterator[Api]:
    server, api = start_api(cluster_url)
    try:
        yield api
    finally:
        api.channel.close()
        server.stop(None).wait()


def test_every_write_kind_works_through_the_cluster(cluster_api: Api, cluster_url: str) -> None:
    api = cluster_api
    db = connect(cluster_url)
    nodes = {db.keyslot(redis_keys.extensions(d)) // 5462 for d in DOMAINS}  # type: ignore[attr-defined]
    assert len(nodes) > 1, "the domains should live on several masters"
    api.call(
        "CreateExtensionTemplate",
        pb.CreateExtensionTemplateRequest(
            extension_template_id="agents",
            extension_template=pb.ExtensionTemplate(variables={"user_context": "agents"}),
        ),
    )
    for domain in DOMAINS:
        api.call(
            "CreateDomain",
            pb.CreateDomainRequest(domain_id=domain, domain=pb.Domain(variables={"v": "1"})),
        )
        created = api.call(
            "CreateExtension",
            pb.CreateExtensionRequest(
                parent=f"domains/{domain}",
                extension_id="1000",
                extension=pb.Extension(
                    password="pw-1000", template="agents", attributes={"number-alias": "alice"}
                ),
            ),
        )
        api.call(
            "UpdateExtension",
            pb.UpdateExtensionRequest(
                extension=pb.Extension(name=created.name, password="pw-new", etag=created.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["password"]),
            ),
        )
        batch = api.call(
            "BatchCreateExtensions",
            pb.BatchCreateExtensionsRequest(
                parent=f"domains/{domain}",
                range=pb.ExtensionRange(
                    first="2000", last="2009", prototype=pb.Extension(template="agents")
                ),
            ),
        )
        assert len(batch.extensions) == 10
    for domain in DOMAINS:
        stored = json.loads(db.hget(redis_keys.extensions(domain), "1000") or b"")
        assert stored["param"]["password"] == "pw-new"
        assert stored["template"] == "agents"
        assert db.hlen(redis_keys.extensions(domain)) == 11
        assert db.hget(redis_keys.aliases(domain), "alice") == b"1000"
        assert db.hget(redis_keys.template_refs(domain), "agents") == b"11"
    # Templates in use stay; an alias collision is refused; deletes clean derived keys.
    with pytest.raises(grpc.RpcError) as refused:
        api.call(
            "DeleteExtensionTemplate", pb.DeleteExtensionTemplateRequest(name="templates/agents")
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as taken:
        api.call(
            "CreateExtension",
            pb.CreateExtensionRequest(
                parent=f"domains/{DOMAINS[0]}",
                extension_id="1001",
                extension=pb.Extension(attributes={"number-alias": "alice"}),
            ),
        )
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    api.call(
        "DeleteExtension", pb.DeleteExtensionRequest(name=f"domains/{DOMAINS[1]}/extensions/1000")
    )
    assert db.hget(redis_keys.extensions(DOMAINS[1]), "1000") is None
    assert db.hget(redis_keys.aliases(DOMAINS[1]), "alice") is None
    listed = api.call(
        "ListExtensions", pb.ListExtensionsRequest(parent=f"domains/{DOMAINS[2]}", page_size=5)
    )
    assert len(listed.extensions) == 5 and listed.next_page_token
    db.close()


def test_change_events_reach_subscribers_on_a_cluster(cluster_api: Api, cluster_url: str) -> None:
    db = connect(cluster_url)
    pubsub = db.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(redis_keys.DIRECTORY_CHANGES_CHANNEL)
    pubsub.get_message(timeout=2)  # the subscribe confirmation
    cluster_api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(parent=f"domains/{DOMAINS[3]}", extension_id="1500"),
    )
    message = None
    for _ in range(50):
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            break
    assert message is not None and message["type"] == "message"
    event = json.loads(message["data"])
    assert (event["domain"], event["extension"], event["op"]) == (DOMAINS[3], "1500", "create")
    pubsub.close()
    db.close()
