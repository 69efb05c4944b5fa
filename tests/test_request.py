"""`nachos-deploy request` on the real engine, against the probe playing the platform's gateway: with no
data it sends `{}` (the gateway drops an empty payload and never answers), and a request nobody
answers names the subject and how long it waited."""

from __future__ import annotations

import re

from tests.test_lifecycle import Deployment, deployment, platform_probe

__all__ = ["deployment"]  # the fixture, imported for pytest


def test_request_without_data_sends_json_and_a_silence_is_named(deployment: Deployment) -> None:
    deployment.write({"gateway": platform_probe()})
    code, out, err = deployment.run("up")
    assert code == 0, out + err

    code, out, err = deployment.run("request", "nachos.gateway.subagents.list")
    assert code == 0, out + err
    assert out.strip() == '{"ok": true, "runs": []}'

    # A payload that is not JSON is refused before it is sent: nothing would answer it.
    code, out, err = deployment.run("request", "nachos.gateway.subagents.list", "")
    assert code == 2 and "DATA is not JSON" in err and "--raw" in err, out + err

    # An empty payload sent on purpose (--raw): the gateway logs a SyntaxError and never answers.
    code, out, err = deployment.run(
        "request", "nachos.gateway.subagents.list", "", "--raw", "--timeout", "0.5"
    )
    assert code == 1, out + err
    assert "Traceback" not in out + err
    message = " ".join(err.split())
    assert re.search(
        r"No reply on nachos\.gateway\.subagents\.list: waited 0\.\d+s \(--timeout 0\.5\)", message
    )
    assert "expect a JSON payload" in message
    code, out, _ = deployment.run("logs", "gateway", "--tail", "20")
    assert "SyntaxError: Unexpected end of JSON input" in out

    code, out, err = deployment.run("request", "nachos.nobody.listens", "--timeout", "0.5")
    assert code == 1
    assert (
        "No reply on nachos.nobody.listens: nothing on the bus answers on nachos.nobody.listens"
        in " ".join(err.split())
    )
