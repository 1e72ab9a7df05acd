"""A change made over gRPC is what the very next xml_curl lookup answers: the real
``python -m directory_service`` (HTTP + gRPC in one process, cache on), real Redis."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from cti.v1 import directory_pb2 as pb
from cti.v1 import directory_pb2_grpc
from tests.directory.service import is_not_found, name_values, parse_user, running_service

TOKEN = "xml-curl-test-token"
DOMAIN = "example.com"
NAME = f"domains/{DOMAIN}/extensions/1001"


def test_grpc_writes_are_answered_by_the_next_lookup(redis_url: str) -> None:
    with running_service(redis_url, env={"CTI_API_TOKEN": TOKEN}) as service:
        service.wait_until_live()
        channel = grpc.insecure_channel(f"127.0.0.1:{service.grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = directory_pb2_grpc.DirectoryServiceStub(channel)
        metadata = (("authorization", f"Bearer {TOKEN}"),)

        assert is_not_found(service.lookup(DOMAIN, "1001"))  # now cached as absent
        stub.CreateExtension(
            pb.CreateExtensionRequest(
                parent=f"domains/{DOMAIN}",
                extension_id="1001",
                extension=pb.Extension(
                    password="first-pw",
                    attributes={"number-alias": "alice", "cacheable": "60000"},
                ),
            ),
            metadata=metadata,
            timeout=10,
        )
        _, _, user = parse_user(service.lookup(DOMAIN, "1001"))
        assert name_values(user, "params", "param")["password"] == "first-pw"
        assert parse_user(service.lookup(DOMAIN, "alice"))[2].get("id") == "1001"

        for round_ in range(5):  # each change, then at once the lookup
            stub.UpdateExtension(
                pb.UpdateExtensionRequest(
                    extension=pb.Extension(
                        name=NAME,
                        password=f"pw-{round_}",
                        attributes={"number-alias": f"alias{round_}"},
                    ),
                    update_mask=field_mask_pb2.FieldMask(
                        paths=["password", "attributes.number-alias"]
                    ),
                ),
                metadata=metadata,
                timeout=10,
            )
            _, _, user = parse_user(service.lookup(DOMAIN, "1001"))
            assert name_values(user, "params", "param")["password"] == f"pw-{round_}"
            assert user.get("number-alias") == f"alias{round_}"
            assert parse_user(service.lookup(DOMAIN, f"alias{round_}"))[2].get("id") == "1001"

        # A template change reaches every extension using it, also at once.
        stub.CreateExtensionTemplate(
            pb.CreateExtensionTemplateRequest(
                extension_template_id="agents",
                extension_template=pb.ExtensionTemplate(variables={"callgroup": "sales"}),
            ),
            metadata=metadata,
            timeout=10,
        )
        stub.UpdateExtension(
            pb.UpdateExtensionRequest(
                extension=pb.Extension(name=NAME, template="agents"),
                update_mask=field_mask_pb2.FieldMask(paths=["template"]),
            ),
            metadata=metadata,
            timeout=10,
        )
        _, _, user = parse_user(service.lookup(DOMAIN, "1001"))
        assert name_values(user, "variables", "variable")["callgroup"] == "sales"
        stub.UpdateExtensionTemplate(
            pb.UpdateExtensionTemplateRequest(
                extension_template=pb.ExtensionTemplate(
                    name="templates/agents", variables={"callgroup": "support"}
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["variables.callgroup"]),
            ),
            metadata=metadata,
            timeout=10,
        )
        _, _, user = parse_user(service.lookup(DOMAIN, "1001"))
        assert name_values(user, "variables", "variable")["callgroup"] == "support"

        stub.DeleteExtension(pb.DeleteExtensionRequest(name=NAME), metadata=metadata, timeout=10)
        assert is_not_found(service.lookup(DOMAIN, "1001"))
        assert is_not_found(service.lookup(DOMAIN, "alias4"))
        channel.close()
