"""Login flood: a real `pyqd serve`, 300 wrong passwords fired 40 at a time at the OML token endpoint, and the
server's RSS before the flood and at its peak (VmHWM) after it, with the answers it gave.

    python -m bench.login_flood                      # this tree, default settings (throttle + hash gate)
    python -m bench.login_flood --no-throttle        # this tree, lockouts off: only the hash gate bounds memory
    python -m bench.login_flood --source /tmp/old    # another checkout (e.g. before issue 8) for comparison

Uses the production argon2 cost (t=3, 64 MiB) unless told otherwise."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.resources import status_kb
from bench.server import running_server

TOKEN = "/omlusers/api/oauth2/v1/token"
VICTIM, VICTIM_PASSWORD = "VICTIM", "victim-right-password"


async def flood(url: str, attempts: int, concurrency: int) -> tuple[Counter[int], float]:
    """`attempts` wrong passwords for VICTIM, `concurrency` in flight; the status counts and the seconds taken."""
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def one(i: int) -> None:
            async with gate:
                body = {"grant_type": "password", "username": VICTIM, "password": f"wrong-password-{i}"}
                try:
                    r = await client.post(TOKEN, json=body)
                    statuses[r.status_code] += 1
                except httpx.HTTPError as e:
                    statuses[type(e).__name__] += 1  # type: ignore[index]

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(attempts)))
        return statuses, time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=Path(__file__).resolve().parent.parent, help="pyqd tree to run")
    ap.add_argument("--attempts", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=40)
    ap.add_argument("--no-throttle", action="store_true", help="lockouts off (only the hash gate is left)")
    ap.add_argument("--memory-kib", type=int, default=65536, help="argon2 memory cost (production: 65536)")
    args = ap.parse_args()
    settings = {"PYQD_PASSWORD_HASH_MEMORY_KIB": str(args.memory_kib)}
    if args.no_throttle:
        settings |= {"PYQD_LOGIN_USER_MAX_FAILURES": "1000000", "PYQD_LOGIN_ADDRESS_MAX_FAILURES": "1000000"}
    settings |= {"PYQD_WORKERS": "1", "PYQD_WARM_WORKERS": "0"}
    with running_server(wait_ready=False, source=str(args.source.resolve()), **settings) as srv:
        url, proc = srv.url, srv.proc
        srv.add_user(VICTIM, VICTIM_PASSWORD)
        before = status_kb(proc.pid, "VmRSS") / 1024
        statuses, seconds = asyncio.run(flood(url, args.attempts, args.concurrency))
        peak = status_kb(proc.pid, "VmHWM") / 1024
        after = status_kb(proc.pid, "VmRSS") / 1024
        health = httpx.get(f"{url}/health", timeout=60)
    throttle = "off" if args.no_throttle else "on"
    print(f"source: {args.source}  throttle: {throttle}  argon2 memory: {args.memory_kib} KiB")
    print(f"{args.attempts} wrong logins, {args.concurrency} concurrent, in {seconds:.1f} s")
    print(f"answers: {dict(sorted(statuses.items(), key=str))}")
    print(f"server RSS before: {before:.0f} MiB, peak: {peak:.0f} MiB, after: {after:.0f} MiB")
    print(f"/health after: {health.status_code}")


if __name__ == "__main__":
    main()
