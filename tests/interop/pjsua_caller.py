"""A pjsua2 (pjsip) caller for interop tests, run as its own process.

    python pjsua_caller.py --target sip:service@127.0.0.1:PORT --port PORT
        [--dtmf 9 --method rfc2833|info --delay 1.5] [--duration 4]

Places one call, optionally sends a DTMF digit `delay` seconds after the call is
confirmed, hangs up after `duration` seconds, and prints one JSON line with what
happened. Exit 0 when the call was confirmed and ended cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import pjsua2 as pj


class Call(pj.Call):  # type: ignore[misc]
    def __init__(self, account: pj.Account) -> None:
        super().__init__(account)
        self.confirmed_at: float | None = None
        self.disconnected = False
        self.last_status = 0

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.info
        self.last_status = int(info.lastStatusCode)
        if info.state == pj.InvState.CONFIRMED and self.confirmed_at is None:
            self.confirmed_at = time.monotonic()
        if info.state == pj.InvState.DISCONNECTED:
            self.disconnected = True

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        # Without a connection to the null device pjsua stops sending RTP after 1 s.
        for index, media in enumerate(self.info.media):
            if media.type == pj.MediaType.AUDIO and media.status == pj.CallMediaStatus.ACTIVE:
                audio = self.getAudioMedia(index)
                manager = pj.Endpoint.instance().audDevManager
                manager.captureDevMedia.startTransmit(audio)
                audio.startTransmit(manager.playbackDevMedia)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dtmf")
    parser.add_argument("--method", choices=("rfc2833", "info"), default="rfc2833")
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()

    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.logConfig.level = 1
    config.logConfig.consoleLevel = 1
    config.medConfig.sndAutoCloseTime = -1
    endpoint.libInit(config)
    transport = pj.TransportConfig()
    transport.port = args.port
    transport.boundAddress = "127.0.0.1"
    endpoint.transportCreate(pj.TransportType.UDP, transport)
    endpoint.audDevManager.setNullDev()
    endpoint.libStart()

    account_config = pj.AccountConfig()
    account_config.idUri = f"sip:caller@127.0.0.1:{args.port}"
    account = pj.Account()
    account.create(account_config)

    call = Call(account)
    call.makeCall(args.target, pj.CallOpParam(True))
    result = {"confirmed": False, "dtmf_sent": False, "status": 0}
    deadline = time.monotonic() + args.timeout
    hung_up = False
    try:
        while time.monotonic() < deadline and not call.disconnected:
            time.sleep(0.02)  # pjsua's own threads handle the events
            now = time.monotonic()
            if call.confirmed_at is None:
                continue
            result["confirmed"] = True
            if args.dtmf and not result["dtmf_sent"] and now >= call.confirmed_at + args.delay:
                if args.method == "rfc2833":
                    call.dialDtmf(args.dtmf)
                else:
                    param = pj.CallSendDtmfParam()
                    param.digits = args.dtmf
                    param.method = pj.DtmfMethod.SIP_INFO
                    call.sendDtmf(param)
                result["dtmf_sent"] = True
            if not hung_up and now >= call.confirmed_at + args.duration:
                call.hangup(pj.CallOpParam(True))
                hung_up = True
        result["status"] = call.last_status
        result["ended"] = call.disconnected
    finally:
        print(json.dumps(result), flush=True)
        endpoint.hangupAllCalls()
        # The Call must go before the library, or pjsua asserts on a dangling call id.
        del call
        endpoint.libDestroy()
    return 0 if result["confirmed"] and result.get("ended") else 1


if __name__ == "__main__":
    sys.exit(main())
