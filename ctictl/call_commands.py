"""``ctictl call ...``: the event service's call-control commands."""

from __future__ import annotations

import argparse
from typing import Any

from cti.v1 import call_control_pb2 as call_pb
from ctictl.client import (
    ApiClient,
)
from ctictl.output import Output

# ---------------------------------------------------------------------------------------
# call (the event service's CallControlService)

TRANSFER_LEGS = {
    "this": call_pb.TransferRequest.LEG_UNSPECIFIED,
    "other": call_pb.TransferRequest.LEG_BRIDGED,
    "both": call_pb.TransferRequest.LEG_BOTH,
}
LISTEN_MODES = {
    "listen": call_pb.EavesdropRequest.MODE_LISTEN,
    "whisper": call_pb.EavesdropRequest.MODE_WHISPER,
    "barge": call_pb.EavesdropRequest.MODE_BARGE,
}


def call_dial(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.OriginateRequest(
        extension=args.extension,
        destination=args.destination,
        context=args.context or "",
        caller_id_name=args.caller_id_name or "",
        caller_id_number=args.caller_id_number or "",
        ring_timeout_seconds=args.ring_timeout,
        auto_answer=args.auto_answer,
        variables=dict(args.var or ()),
        request_id=args.request_id or "",
    )
    out.call_placed(client.call("Originate", request))
    return 0


def call_listen(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.EavesdropRequest(
        channel=args.channel,
        supervisor=args.supervisor,
        mode=LISTEN_MODES[args.mode],
        request_id=args.request_id or "",
        auto_answer=args.auto_answer,
    )
    out.call_placed(client.call("Eavesdrop", request))
    return 0


def call_hangup(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.HangupRequest(channel=args.channel, cause=args.cause or "")
    out.call_done("hangup", client.call("Hangup", request))
    return 0


def call_transfer(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.TransferRequest(
        channel=args.channel,
        destination=args.destination,
        context=args.context or "",
        leg=TRANSFER_LEGS[args.leg],
    )
    out.call_done("transfer", client.call("Transfer", request))
    return 0


def call_hold(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    out.call_done("hold", client.call("Hold", call_pb.HoldRequest(channel=args.channel)))
    return 0


def call_unhold(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    out.call_done("unhold", client.call("Unhold", call_pb.UnholdRequest(channel=args.channel)))
    return 0


def call_record(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    path = args.path or ""
    if args.action == "start":
        request: Any = call_pb.StartRecordingRequest(
            channel=args.channel, path=path, max_seconds=args.max_seconds
        )
        out.call_done("record start", client.call("StartRecording", request))
        return 0
    if args.max_seconds:
        out.usage_error("--max-seconds is for 'record start'")
        return 2
    request = call_pb.StopRecordingRequest(channel=args.channel, path=path)
    out.call_done("record stop", client.call("StopRecording", request))
    return 0


def call_dtmf(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.SendDtmfRequest(channel=args.channel, digits=args.digits)
    out.call_done("dtmf", client.call("SendDtmf", request))
    return 0
