"""Drives a page in headless Chromium over the DevTools protocol (the
--remote-debugging-pipe transport: no sockets, no extra packages), for
tests of pages that change after they load.

usage: cdp_page.py CHROMIUM URL OUT_DIR [--until JS] [--timeout S] [--window WxH]
Opens URL, waits until the JavaScript expression JS is true (polled every
0.25 s; default: the document has loaded), then writes OUT_DIR/dom.html
(the live DOM), OUT_DIR/screenshot.png and OUT_DIR/errors.txt (uncaught
exceptions and console errors, one per line). Exit 0 when JS became true,
3 on timeout (the files are written either way), 2 when Chromium failed.
"""
import base64
import json
import os
import subprocess
import sys
import time


def main():
    args = sys.argv[1:]
    if len(args) < 3:
        sys.exit(__doc__)
    chromium, url, out = args[:3]
    until, timeout, window = "document.readyState === 'complete'", 60.0, "1280,1600"
    rest = args[3:]
    for i in range(0, len(rest), 2):
        if rest[i] == "--until":
            until = rest[i + 1]
        elif rest[i] == "--timeout":
            timeout = float(rest[i + 1])
        elif rest[i] == "--window":
            window = rest[i + 1].replace("x", ",")
    os.makedirs(out, exist_ok=True)
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def fds():
        # Chromium reads commands on fd 3 and writes on fd 4 (copied high
        # first, so that neither end is overwritten by the other).
        a, b = os.dup(to_chrome_r), os.dup(from_chrome_w)
        os.dup2(a, 3)
        os.dup2(b, 4)

    proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                             "--user-data-dir=" + os.path.join(out, "profile"), "--window-size=" + window,
                             "about:blank"], preexec_fn=fds, pass_fds=(3, 4),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    reader = os.fdopen(from_chrome_r, "rb")
    writer = os.fdopen(to_chrome_w, "wb")
    buffered, next_id, errors = b"", [0], []

    def receive():
        nonlocal buffered
        while b"\0" not in buffered:
            chunk = os.read(reader.fileno(), 65536)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            buffered += chunk
        message, buffered = buffered.split(b"\0", 1)
        return json.loads(message)

    def call(method, params=None, session=None):
        next_id[0] += 1
        msg = {"id": next_id[0], "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        writer.write(json.dumps(msg).encode() + b"\0")
        writer.flush()
        while True:
            m = receive()
            if m.get("method") == "Runtime.exceptionThrown":
                d = m["params"]["exceptionDetails"]
                errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "")))
            elif m.get("method") == "Runtime.consoleAPICalled" and m["params"].get("type") == "error":
                errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                           for a in m["params"].get("args", [])))
            elif m.get("id") == next_id[0]:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]

    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Runtime.enable", session=session)
        call("Page.enable", session=session)
        call("Page.navigate", {"url": url}, session=session)
        deadline, ok = time.time() + timeout, False

        def evaluate(expr):
            r = call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)
            return r.get("result", {}).get("value")

        while time.time() < deadline:
            try:
                if evaluate(f"Boolean({until})"):
                    ok = True
                    break
            except RuntimeError:
                pass  # navigating: no context yet
            time.sleep(0.25)
        with open(os.path.join(out, "dom.html"), "w") as f:
            f.write(evaluate("document.documentElement.outerHTML") or "")
        shot = call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=session)
        with open(os.path.join(out, "screenshot.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        with open(os.path.join(out, "errors.txt"), "w") as f:
            f.write("".join(e + "\n" for e in errors))
        try:
            call("Browser.close")
        except (EOFError, RuntimeError):
            pass
        return 0 if ok else 3
    except (EOFError, RuntimeError, OSError) as e:
        print(f"cdp_page: {e}", file=sys.stderr)
        return 2
    finally:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    sys.exit(main())
