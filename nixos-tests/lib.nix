# The topology → NixOS wiring, in builtins only (no nixpkgs.lib), so it evaluates offline with a bare
# `nix-instantiate` and CI can compare it with what the harness renders.
#
# Input: a directory written by `natslab render TOPOLOGY --format nixos` (committed under ./rendered):
#   nodes.json       manifest: nodes (name, role, jetstream, ports), secret file names
#   nodes/<n>.json   services.nats.settings for node <n>
#   secrets/         test-only secrets, derived from the seed (the topology's name)
#   inventory.json   what the `lab` VM hands to `natslab run --backend attached`
rec {
  # Everything the Nix side needs from one rendered directory.
  load = rendered:
    let
      manifest = builtins.fromJSON (builtins.readFile (rendered + "/nodes.json"));
      settingsOf = name: builtins.fromJSON (builtins.readFile (rendered + "/nodes/${name}.json"));
    in
    manifest // {
      inherit rendered;
      settings = builtins.listToAttrs (map (n: { name = n.name; value = settingsOf n.name; }) manifest.nodes);
    };

  # The test driver's Python name of a machine: non [A-Za-z0-9_] characters become `_`.
  pyName = name: builtins.replaceStrings [ "-" "." ] [ "_" "_" ] name;

  # /etc entries delivering every secret file, readable only by `owner`.
  secretFiles = t: owner:
    builtins.listToAttrs (map
      (f: {
        name = "natslab/secrets/${f}";
        value = { source = t.rendered + "/secrets/${f}"; mode = "0400"; user = owner; group = owner; };
      })
      t.secret_files);

  node = t: name: builtins.head (builtins.filter (n: n.name == name) t.nodes);

  # The NixOS configuration of the VM that runs node `name` (the real services.nats module).
  nodeConfig = t: name:
    let n = node t name; in
    {
      services.nats = {
        enable = true;
        serverName = name;
        port = builtins.head n.ports;
        jetstream = n.jetstream;
        # Configs name certificates and creds that exist only at run time under /etc/natslab.
        validateConfig = false;
        settings = t.settings.${name};
      };
      networking.firewall.allowedTCPPorts = n.ports;
      environment.etc = secretFiles t "nats";
    };

  # What nats-server finally runs on that VM: the rendered settings plus what the module itself sets
  # (server_name, port, jetstream.store_dir). CI compares this with the harness's own rendering.
  effectiveSettings = t: name:
    let
      n = node t name;
      s = t.settings.${name};
      js = if n.jetstream then { jetstream = (s.jetstream or { }) // { store_dir = "/var/lib/nats"; }; } else { };
    in
    s // { server_name = name; port = builtins.head n.ports; } // js;

  # The driver script: boot everything, start `natslab run --backend attached` in the lab VM, serve its
  # fault requests with the driver's own powers until it finishes, keep the reports, fail if it failed.
  testScript = t:
    let
      machines = builtins.concatStringsSep ", " (map (n: ''"${n.name}": ${pyName n.name}'') t.nodes);
    in
    ''
      import json
      import shutil
      import time

      nodes = {${machines}}

      start_all()
      for name, m in nodes.items():
          m.wait_for_unit("nats.service")
          m.wait_for_open_port(4222)
      lab.wait_for_unit("multi-user.target")

      shared = lab.shared_dir
      faults = shared / "faults"
      faults.mkdir(exist_ok=True)
      (shared / "reports").mkdir(exist_ok=True)


      def serve(fault):
          # One fault, in natslab's wire format (nemesis::Fault): {"op": ..., "node": ...}.
          op = fault["op"]
          m = nodes[fault["node"]]
          if op == "kill":
              m.crash()
          elif op == "start":
              m.start()
              m.wait_for_unit("nats.service")
          elif op == "pause":
              m.succeed("systemctl kill -s STOP nats")
          elif op == "resume":
              m.succeed("systemctl kill -s CONT nats")
          elif op == "isolate":
              m.block()
          elif op == "rejoin":
              m.unblock()
          else:
              raise ValueError(f"this driver cannot {op}")


      with subtest("natslab run --backend attached"):
          lab.succeed(
              "systemd-run --unit=natslab-run --property=Type=exec -- sh -c '"
              "natslab run --backend attached --inventory /etc/natslab/inventory.json "
              "--junit /tmp/shared/reports/junit.xml --json /tmp/shared/reports/report.json "
              "--markdown /tmp/shared/reports/report.md > /tmp/shared/reports/natslab.log 2>&1; "
              "echo $? > /tmp/shared/natslab.exit'"
          )
          deadline = time.monotonic() + 3600
          while not (shared / "natslab.exit").exists():
              for path in sorted(faults.glob("*.request.json")):
                  answer = faults / path.name.replace(".request.", ".response.")
                  # natslab removes an answered request (then its answer): one listed a moment ago may be gone.
                  try:
                      text = path.read_text()
                  except FileNotFoundError:
                      continue
                  if answer.exists() or not path.exists():
                      continue
                  req = json.loads(text)
                  try:
                      serve(req["fault"])
                      resp = {"seq": req["seq"], "ok": True, "message": ""}
                  except Exception as e:
                      resp = {"seq": req["seq"], "ok": False, "message": str(e)}
                  answer.write_text(json.dumps(resp))
              t.assertLess(time.monotonic(), deadline, "natslab run did not finish")
              time.sleep(0.1)

      shutil.copytree(shared / "reports", driver.out_dir / "reports", dirs_exist_ok=True)
      print((shared / "reports" / "natslab.log").read_text())
      t.assertEqual((shared / "natslab.exit").read_text().strip(), "0", "natslab run reported violations")
    '';
}
