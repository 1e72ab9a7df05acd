"""The directory gRPC API: ``cti.v1.DirectoryService`` over :mod:`directory_service.api.store`.

Servicer methods are thin: parse and validate the request (:mod:`~directory_service.
validation`, :mod:`~directory_service.api.messages`), call the store, convert back. Errors are
:class:`cti.api_errors.ApiError`s, mapped to status codes by the shared interceptor.
Writes stop retrying when the call's deadline has passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import empty_pb2

from cti.api_errors import ApiError
from cti.config import TenantWriteSettings, TokenScope
from cti.directory_entry import DirectoryEntry
from cti.grpc_server import TokenTable, caller_scope, check_domain
from cti.v1 import directory_pb2, directory_pb2_grpc
from directory_service.api import messages, tenant_policy, validation
from directory_service.api.errors import invalid_argument
from directory_service.api.passwords import A1_HASH, SECRET_PARAMS, generate_password, secret_params
from directory_service.api.store import DirectoryStore

SERVICE_NAME = "cti.v1.DirectoryService"
ERROR_DOMAIN = "directory.cti"
MAX_BATCH = 50_000
MAX_MESSAGE_BYTES = 64 << 20
"""Requests and answers of a 50,000-extension batch are several MB (gRPC's default: 4)."""
EXTENSION_PATHS = ("params", "variables", "attributes", "template", "password")
SETTINGS_PATHS = ("params", "variables", "attributes")
DOMAIN_PATHS = ("params", "variables")

Context = Any  # grpc.ServicerContext (grpc ships no type stubs)
Guard = Callable[[DirectoryEntry | None, DirectoryEntry | None], None]
"""Judges a write from the old entry to the new one (None: absent); raises to refuse."""


def _unguarded(old: DirectoryEntry | None, new: DirectoryEntry | None) -> None:
    return None


def _deadline(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class DirectoryApi(directory_pb2_grpc.DirectoryServiceServicer):
    def __init__(
        self,
        store: DirectoryStore,
        store_a1_hash: bool,
        tokens: TokenTable | None = None,
        tenant_writes: TenantWriteSettings | None = None,
    ) -> None:
        self.store = store
        self.store_a1_hash = store_a1_hash
        self.tokens = tokens or TokenTable((), {})
        self.tenant_writes = tenant_writes or TenantWriteSettings()

    # -- token scopes: a domain-limited token works only on its domains -------------------

    def _allow(self, context: Context, domain: str) -> TokenScope:
        scope = caller_scope(context, self.tokens)
        if domain != validation.ALL_DOMAINS:
            check_domain(scope, domain)
        return scope

    def _guard(self, scope: TokenScope, field: str) -> Guard:
        """What a write with this token may change (:mod:`.tenant_policy`): anything for a
        token not limited to domains."""
        if not scope.domains:
            return _unguarded

        def guard(old: DirectoryEntry | None, new: DirectoryEntry | None) -> None:
            tenant_policy.check_write(self.tenant_writes, scope.name, old, new, field)

        return guard

    def _all_domains(self, context: Context, what: str) -> TokenScope:
        """Templates are shared by every domain: only an unlimited token may write them."""
        scope = caller_scope(context, self.tokens)
        if scope.domains:
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "DOMAIN_NOT_ALLOWED",
                f"this token ({scope.name}) is limited to some domains; {what} affects all",
            )
        return scope

    # -----------------------------------------------------------------------------------
    # Extensions

    def GetExtension(
        self, request: directory_pb2.GetExtensionRequest, context: Context
    ) -> directory_pb2.Extension:
        domain, extension_id = validation.parse_extension_name(request.name, "name")
        self._allow(context, domain)
        return messages.extension_message(self.store.get_extension(domain, extension_id))

    def ListExtensions(
        self, request: directory_pb2.ListExtensionsRequest, context: Context
    ) -> directory_pb2.ListExtensionsResponse:
        domain = validation.parse_domain_name(request.parent, "parent", allow_all=True)
        scope = self._allow(context, domain)
        template = (
            validation.parse_template_name(request.template, "template", allow_bare=True)
            if request.template
            else ""
        )
        size = messages.page_size(request.page_size)
        id_prefix = validation.check_id_prefix(request.id_prefix, "id_prefix")
        query = {"parent": request.parent, "template": template, "id_prefix": id_prefix}
        position = messages.decode_token(request.page_token, query, 3)
        if position is not None and not messages.is_scan_cursor(position[1]):
            raise messages.invalid_token()
        page, next_position = self.store.list_extensions(
            None if domain == validation.ALL_DOMAINS else domain,
            (position[0], position[1], position[2]) if position else None,
            size,
            template,
            id_prefix,
        )
        return directory_pb2.ListExtensionsResponse(
            extensions=[
                messages.extension_message(e) for e in page if scope.allows_domain(e.domain)
            ],
            next_page_token=messages.encode_token(query, next_position) if next_position else "",
        )

    def _new_extension(
        self, domain: str, extension_id: str, message: directory_pb2.Extension, field: str
    ) -> tuple[DirectoryEntry, str]:
        """A validated entry ready to store, and the password to return (generated)."""
        entry = messages.entry_from_message(message, field, with_template=True)
        validation.check_extension_input(entry, field)
        generated = ""
        if message.password:
            password = validation.check_password(message.password, f"{field}.password")
        elif entry.params.get(A1_HASH):
            return entry, ""
        else:
            password = generated = generate_password()
        secret = secret_params(extension_id, domain, password, self.store_a1_hash)
        return messages.with_secret(entry, secret), generated

    def CreateExtension(
        self, request: directory_pb2.CreateExtensionRequest, context: Context
    ) -> directory_pb2.Extension:
        domain = validation.parse_domain_name(request.parent, "parent")
        scope = self._allow(context, domain)
        extension_id = validation.check_extension_id(request.extension_id, "extension_id")
        entry, generated = self._new_extension(domain, extension_id, request.extension, "extension")
        self._guard(scope, "extension")(None, entry)
        (stored,) = self.store.create_extensions(
            domain, [(extension_id, entry)], _deadline(context)
        )
        return messages.extension_message(stored, generated)

    def BatchCreateExtensions(
        self, request: directory_pb2.BatchCreateExtensionsRequest, context: Context
    ) -> directory_pb2.BatchCreateExtensionsResponse:
        domain = validation.parse_domain_name(request.parent, "parent")
        scope = self._allow(context, domain)
        has_range = request.HasField("range")
        if has_range == bool(request.requests):
            raise invalid_argument("requests", "give either requests or range (exactly one)")
        items = (
            self._range_items(domain, request.range)
            if has_range
            else self._listed_items(domain, request)
        )
        if scope.domains:
            # A range's entries differ only in their generated (letters and digits) secret.
            checked = items[:1] if has_range else items
            for index, (_, entry, _) in enumerate(checked):
                field = "range.prototype" if has_range else f"requests[{index}].extension"
                self._guard(scope, field)(None, entry)
        stored = self.store.create_extensions(
            domain, [(i, e) for i, e, _ in items], _deadline(context)
        )
        return directory_pb2.BatchCreateExtensionsResponse(
            extensions=[
                messages.extension_message(s, password)
                for s, (_, _, password) in zip(stored, items, strict=True)
            ]
        )

    def _range_items(
        self, domain: str, spec: directory_pb2.ExtensionRange
    ) -> list[tuple[str, DirectoryEntry, str]]:
        """A range's extensions: the prototype with a generated password each."""
        prototype = spec.prototype
        if prototype.password:
            raise invalid_argument(
                "range.prototype.password", "passwords are generated per extension"
            )
        if prototype.attributes.get("number-alias"):
            raise invalid_argument(
                "range.prototype.attributes.number-alias", "an alias must be unique"
            )
        ids = validation.range_ids(spec.first, spec.last, "range", MAX_BATCH)
        base = messages.entry_from_message(prototype, "range.prototype", with_template=True)
        validation.check_extension_input(base, "range.prototype")
        if base.params.get(A1_HASH):
            raise invalid_argument("range.prototype.params.a1-hash", "differs per extension")
        items = []
        for extension_id in ids:
            password = generate_password()
            secret = secret_params(extension_id, domain, password, self.store_a1_hash)
            items.append((extension_id, messages.with_secret(base, secret), password))
        return items

    def _listed_items(
        self, domain: str, request: directory_pb2.BatchCreateExtensionsRequest
    ) -> list[tuple[str, DirectoryEntry, str]]:
        """The listed extensions, each validated like a CreateExtension."""
        if len(request.requests) > MAX_BATCH:
            raise invalid_argument("requests", f"at most {MAX_BATCH} extensions per call")
        items = []
        for index, item in enumerate(request.requests):
            field = f"requests[{index}]"
            if item.parent and item.parent != request.parent:
                raise invalid_argument(f"{field}.parent", "must be empty or equal to parent")
            extension_id = validation.check_extension_id(item.extension_id, f"{field}.extension_id")
            entry, generated = self._new_extension(
                domain, extension_id, item.extension, f"{field}.extension"
            )
            items.append((extension_id, entry, generated))
        return items

    def UpdateExtension(
        self, request: directory_pb2.UpdateExtensionRequest, context: Context
    ) -> directory_pb2.Extension:
        message = request.extension
        domain, extension_id = validation.parse_extension_name(message.name, "extension.name")
        guard = self._guard(self._allow(context, domain), "extension")
        paths = messages.mask_paths(request.update_mask.paths, message, EXTENSION_PATHS)
        incoming = messages.entry_from_message(message, "extension", with_template=True)
        validation.check_extension_input(incoming, "extension")
        secret: dict[str, str] | None = None
        if "password" in paths:
            password = validation.check_password(message.password, "extension.password")
            secret = secret_params(extension_id, domain, password, self.store_a1_hash)
        section_paths = [p for p in paths if p != "password"]

        def change(old: DirectoryEntry) -> DirectoryEntry:
            new = messages.apply_mask(old, incoming, section_paths, keep_params=SECRET_PARAMS)
            if secret is not None:
                new = messages.with_secret(new, secret)
            validation.check_extension(new, "extension")
            guard(old, new)
            return new

        stored = self.store.update_extension(
            domain, extension_id, change, message.etag, _deadline(context)
        )
        return messages.extension_message(stored)

    def DeleteExtension(
        self, request: directory_pb2.DeleteExtensionRequest, context: Context
    ) -> empty_pb2.Empty:
        domain, extension_id = validation.parse_extension_name(request.name, "name")
        self._allow(context, domain)
        self.store.delete_extension(domain, extension_id, request.etag, _deadline(context))
        return empty_pb2.Empty()

    # -----------------------------------------------------------------------------------
    # Templates

    def GetExtensionTemplate(
        self, request: directory_pb2.GetExtensionTemplateRequest, context: Context
    ) -> directory_pb2.ExtensionTemplate:
        template = validation.parse_template_name(request.name, "name")
        return messages.template_message(self.store.get_template(template))

    def ListExtensionTemplates(
        self, request: directory_pb2.ListExtensionTemplatesRequest, context: Context
    ) -> directory_pb2.ListExtensionTemplatesResponse:
        size = messages.page_size(request.page_size)
        position = messages.decode_token(request.page_token, {"list": "templates"}, 1)
        page, last = self.store.list_templates(position[0] if position else "", size)
        return directory_pb2.ListExtensionTemplatesResponse(
            extension_templates=[messages.template_message(t) for t in page],
            next_page_token=messages.encode_token({"list": "templates"}, [last]) if last else "",
        )

    def CreateExtensionTemplate(
        self, request: directory_pb2.CreateExtensionTemplateRequest, context: Context
    ) -> directory_pb2.ExtensionTemplate:
        self._all_domains(context, "a template")
        template = validation.check_template_id(
            request.extension_template_id, "extension_template_id"
        )
        entry = messages.entry_from_message(request.extension_template, "extension_template")
        validation.check_template(entry, "extension_template")
        stored = self.store.create_template(template, entry, _deadline(context))
        return messages.template_message(stored)

    def UpdateExtensionTemplate(
        self, request: directory_pb2.UpdateExtensionTemplateRequest, context: Context
    ) -> directory_pb2.ExtensionTemplate:
        self._all_domains(context, "a template")
        message = request.extension_template
        template = validation.parse_template_name(message.name, "extension_template.name")
        paths = messages.mask_paths(request.update_mask.paths, message, SETTINGS_PATHS)
        incoming = messages.entry_from_message(message, "extension_template")
        change = self._settings_change(
            incoming, paths, validation.check_template, "extension_template", _unguarded
        )
        stored = self.store.update_template(template, change, message.etag, _deadline(context))
        return messages.template_message(stored)

    def DeleteExtensionTemplate(
        self, request: directory_pb2.DeleteExtensionTemplateRequest, context: Context
    ) -> empty_pb2.Empty:
        self._all_domains(context, "a template")
        template = validation.parse_template_name(request.name, "name")
        self.store.delete_template(template, request.etag, _deadline(context))
        return empty_pb2.Empty()

    @staticmethod
    def _settings_change(
        incoming: DirectoryEntry,
        paths: list[str],
        check: Callable[[DirectoryEntry, str], None],
        field: str,
        guard: Guard,
    ) -> Callable[[DirectoryEntry], DirectoryEntry]:
        def change(old: DirectoryEntry) -> DirectoryEntry:
            new = messages.apply_mask(old, incoming, paths)
            check(new, field)
            guard(old, new)
            return new

        return change

    # -----------------------------------------------------------------------------------
    # Domains

    def GetDomain(
        self, request: directory_pb2.GetDomainRequest, context: Context
    ) -> directory_pb2.Domain:
        domain = validation.parse_domain_name(request.name, "name")
        self._allow(context, domain)
        return messages.domain_message(self.store.get_domain(domain))

    def ListDomains(
        self, request: directory_pb2.ListDomainsRequest, context: Context
    ) -> directory_pb2.ListDomainsResponse:
        size = messages.page_size(request.page_size)
        position = messages.decode_token(request.page_token, {"list": "domains"}, 1)
        page, last = self.store.list_domains(position[0] if position else "", size)
        scope = caller_scope(context, self.tokens)
        return directory_pb2.ListDomainsResponse(
            domains=[messages.domain_message(d) for d in page if scope.allows_domain(d.domain)],
            next_page_token=messages.encode_token({"list": "domains"}, [last]) if last else "",
        )

    def CreateDomain(
        self, request: directory_pb2.CreateDomainRequest, context: Context
    ) -> directory_pb2.Domain:
        domain = validation.check_domain(request.domain_id, "domain_id")
        scope = self._allow(context, domain)
        entry = messages.entry_from_message(request.domain, "domain")
        validation.check_domain_settings(entry, "domain")
        self._guard(scope, "domain")(None, entry)
        return messages.domain_message(self.store.create_domain(domain, entry, _deadline(context)))

    def UpdateDomain(
        self, request: directory_pb2.UpdateDomainRequest, context: Context
    ) -> directory_pb2.Domain:
        message = request.domain
        domain = validation.parse_domain_name(message.name, "domain.name")
        guard = self._guard(self._allow(context, domain), "domain")
        paths = messages.mask_paths(request.update_mask.paths, message, DOMAIN_PATHS)
        incoming = messages.entry_from_message(message, "domain")
        change = self._settings_change(
            incoming, paths, validation.check_domain_settings, "domain", guard
        )
        stored = self.store.update_domain(domain, change, message.etag, _deadline(context))
        return messages.domain_message(stored)

    def DeleteDomain(
        self, request: directory_pb2.DeleteDomainRequest, context: Context
    ) -> empty_pb2.Empty:
        domain = validation.parse_domain_name(request.name, "name")
        guard = self._guard(self._allow(context, domain), "domain")
        # Deleting settings removes each of their keys (an operator's user_context too).
        self.store.delete_domain(
            domain, request.etag, _deadline(context), check=lambda old: guard(old, None)
        )
        return empty_pb2.Empty()
