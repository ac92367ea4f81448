"""Starting a hub from Python: the one way (the Python twin of scripts/lib/hub.sh).

    hub = Hub(binary, data_dir)          # data_dir/hub holds the hub's data
    hub.start("--no-worker", env={...})  # binds 127.0.0.1:0, reads the URL it prints, waits for /readyz
    hub.admin("admin", "create-user", "alice")   # last line of the output
    hub.stop()                           # SIGTERM, wait; returns the exit status

`start` can be called again after the process died (a restart on the same
data dir). Standard library only.
"""

import os
import re
import signal
import subprocess
import time
import urllib.request


class HubError(RuntimeError):
    pass


class Hub:
    def __init__(self, binary, data):
        self.binary = binary
        self.data = data
        self.data_dir = os.path.join(data, "hub")
        self.proc = None
        self.url = None
        self.log_path = None
        self.starts = 0
        self.args = ()
        self.env = None

    def start(self, *args, env=None, timeout=90):
        """Starts `hub-api serve` with `args` (global flags) and `env` (the
        whole environment; default: ours). Raises HubError with the log's
        tail when it exits or does not become ready."""
        self.starts += 1
        if args or env is not None:
            self.args, self.env = args, env
        self.log_path = os.path.join(self.data, f"hub-{self.starts}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "--data-dir", self.data_dir, "--bind", "127.0.0.1:0", *self.args, "serve"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.time() + timeout
        while time.time() < deadline:
            m = re.search(r"^paddock: listening on (http://[0-9.:]+)", self.log_text(), re.M)
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                raise HubError(f"hub exited early:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)
        else:
            raise HubError(f"hub did not start within {timeout} s:\n{self.log_text()[-3000:]}")
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/readyz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise HubError(f"hub not ready within {timeout} s:\n{self.log_text()[-3000:]}")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def admin(self, *args):
        """Runs `hub-api ARGS` on this data dir; returns the last line printed."""
        out = subprocess.run([self.binary, "--data-dir", self.data_dir, *args],
                             check=True, capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]

    def stop(self, timeout=60):
        """SIGTERM (the hub drains and stops its PostgreSQL); returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)
