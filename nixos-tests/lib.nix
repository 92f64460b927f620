# The topology → NixOS wiring, in builtins only (no nixpkgs.lib), so it evaluates offline with a bare
# `nix-instantiate`, CI can compare it with what the harness renders, and the driver stand-in
# (./standin) can run exactly what a VM would.
#
# Input: a directory written by `natslab render TOPOLOGY --format nixos` (committed under ./rendered):
#   nodes.json       manifest: nodes (name, role, jetstream, ports, inline secrets, provisioning), secret files
#   nodes/<n>.json   services.nats.settings for node <n>; secrets carried inline are placeholders
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

  # A VM test's time budgets, in seconds. The driver kills the whole test after `global` (its own timer
  # starts before the VMs boot); the script gives `natslab run` at most `run` once everything is up, which
  # leaves the boot and the copying of the reports inside the driver's budget.
  timeouts = { global = 3600; run = 2400; };

  # Where a node's secrets are at run time: from the Nix store under /etc (test VMs), or a runtime
  # directory the host fills itself (sops-nix, agenix: production).
  storeSecrets = "/etc/natslab/secrets";
  secretsDir = dir: if dir == null then storeSecrets else dir;

  # /etc entries delivering every secret file from the store, readable only by `owner` (test VMs only:
  # the store is world-readable).
  secretFiles = t: owner:
    builtins.listToAttrs (map
      (f: {
        name = "natslab/secrets/${f}";
        value = { source = t.rendered + "/secrets/${f}"; mode = "0400"; user = owner; group = owner; };
      })
      t.secret_files);

  node = t: name: builtins.head (builtins.filter (n: n.name == name) t.nodes);

  # A node's settings as handed to the module: secret paths moved to `dir` (null: the store delivery), and
  # JetStream explicitly off where the topology has none. The module always renders a `jetstream` key
  # (`optionalAttrs false { ... }` is `{ }`), and nats-server starts JetStream for any map that does not say
  # `enabled: false`.
  settingsFor = t: name: dir:
    let
      n = node t name;
      raw = builtins.readFile (t.rendered + "/nodes/${name}.json");
      s = builtins.fromJSON (builtins.replaceStrings [ "${storeSecrets}/" ] [ "${secretsDir dir}/" ] raw);
    in
    if n.jetstream then s else s // { jetstream = (s.jetstream or { }) // { enabled = false; }; };

  # What the services.nats module hands nats-server: the settings, plus `server_name`, `port`, and its
  # `jetstream = optionalAttrs cfg.jetstream { store_dir = cfg.dataDir; }` merged into settings.jetstream.
  # Placeholders of inline secrets are still in it: `fillIn` is what the service does at start.
  effectiveSettings = t: name: effectiveSettingsIn t name null;
  effectiveSettingsIn = t: name: dir:
    let
      n = node t name;
      s = settingsFor t name dir;
    in
    s // {
      server_name = name;
      port = builtins.head n.ports;
      jetstream = (if n.jetstream then { store_dir = "/var/lib/nats"; } else { }) // (s.jetstream or { });
    };

  # The shell lines that fill a config's placeholders in from the secrets directory (nixpkgs'
  # replace-secret: the value never passes through the store or a command line).
  fillIn = t: name: dir: conf: replaceSecret:
    builtins.concatStringsSep "\n" (map
      (h: "${replaceSecret} '${h.placeholder}' '${secretsDir dir}/${h.file}' '${conf}'")
      (node t name).inline_secrets);

  # The NixOS configuration of the host that runs node `name` (the real services.nats module).
  #
  # `natsPackages`: nats-server builds by version, for nodes whose topology declares a `server_version`
  # (mixed versions, an upgrade rehearsed); a declared version without a build stops the evaluation with
  # the node, the version and the option to set.
  nodeConfig = t: name: { secrets ? null, natsPackages ? { } }:
    let n = node t name; in
    {
      services.nats = packageFor n natsPackages // {
        enable = true;
        serverName = name;
        port = builtins.head n.ports;
        jetstream = n.jetstream;
        # Configs name certificates and creds that exist only at run time.
        validateConfig = false;
        settings = settingsFor t name secrets;
      };
      networking.firewall.allowedTCPPorts = n.ports;
      environment.etc = if secrets == null then secretFiles t "nats" else { };
    };

  # `{ package = …; }` where the node declares a version, else `{ }` (the module's default package).
  packageFor = n: natsPackages:
    let v = n.server_version or null; in
    if v == null then { }
    else if natsPackages ? ${v} then { package = natsPackages.${v}; }
    else throw "natslab: node ${n.name} declares nats-server ${v} (server_version), and no build of it was given: set services.natslab-node.natsPackages.\"${v}\" (have: ${builtins.concatStringsSep ", " (builtins.attrNames natsPackages)})";

  # Whether every version the topology declares has a build in `natsPackages`.
  buildable = t: natsPackages: builtins.all (n: (n.server_version or null) == null || natsPackages ? ${n.server_version}) t.nodes;

  # The machines whose provisioning unit creates the declared streams: the first hub, leaves with streams.
  provisioners = t: builtins.filter (n: n.provisions) t.nodes;

  # The driver script: boot everything, wait for each host's own provisioning, start `natslab run
  # --backend attached` in the lab VM, serve its fault requests with the driver's powers until it finishes,
  # keep the reports, fail with what natslab's exit code means.
  testScript = t:
    let
      machines = builtins.concatStringsSep ", " (map (n: ''"${n.name}": ${pyName n.name}'') t.nodes);
      provisioning = builtins.concatStringsSep ", " (map (n: ''"${n.name}"'') (provisioners t));
    in
    ''
      import json
      import shutil
      import time

      nodes = {${machines}}
      provisioners = [${provisioning}]

      start_all()
      for name, m in nodes.items():
          m.wait_for_unit("nats.service")
          m.wait_for_open_port(4222)
      for name in provisioners:
          # The host creates its own streams (natslab provision, a oneshot after nats.service).
          nodes[name].wait_for_unit("natslab-provision.service")
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
              # The process dies and stays down: masked, the unit is not restarted (Restart=on-failure).
              m.succeed(
                  "systemctl mask --runtime nats.service"
                  " && systemctl kill --signal=KILL nats.service"
                  " && while systemctl is-active --quiet nats.service; do sleep 0.05; done"
              )
          elif op == "power-loss":
              # QEMU quits: the machine is gone, with whatever it had not written to disk.
              m.crash()
          elif op == "start":
              if not m.booted:
                  m.start()
              else:
                  m.succeed(
                      "systemctl unmask --runtime nats.service"
                      " && systemctl reset-failed nats.service"
                      " && systemctl start nats.service"
                  )
              m.wait_for_unit("nats.service")
          elif op == "pause":
              m.succeed("systemctl kill --signal=STOP nats.service")
          elif op == "resume":
              m.succeed("systemctl kill --signal=CONT nats.service")
          elif op == "isolate":
              m.block()
          elif op == "rejoin":
              m.unblock()
          else:
              raise ValueError(f"this driver cannot {op}")


      meaning = {
          "0": "every check passed",
          "1": "natslab run reported violations",
          "2": "natslab run was given bad input",
          "3": "the harness broke",
          "127": "natslab was not found in the lab VM (the transient unit's PATH)",
      }

      with subtest("natslab run --backend attached"):
          # A transient unit gets systemd's own PATH and nothing of this shell's environment: pass both on.
          lab.succeed(
              "systemd-run --unit=natslab-run --property=Type=exec --setenv=PATH --setenv=NATS_SERVER_BIN"
              " -- sh -c '"
              "natslab run --backend attached --inventory /etc/natslab/inventory.json "
              "--junit /tmp/shared/reports/junit.xml --json /tmp/shared/reports/report.json "
              "--markdown /tmp/shared/reports/report.md > /tmp/shared/reports/natslab.log 2>&1; "
              "echo $? > /tmp/shared/natslab.exit'"
          )
          deadline = time.monotonic() + ${toString timeouts.run}
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
              t.assertLess(time.monotonic(), deadline, "natslab run did not finish within its budget")
              time.sleep(0.1)

      shutil.copytree(shared / "reports", driver.out_dir / "reports", dirs_exist_ok=True)
      print((shared / "reports" / "natslab.log").read_text())
      code = (shared / "natslab.exit").read_text().strip()
      t.assertEqual(code, "0", f"natslab run exited {code}: {meaning.get(code, 'unknown exit code')}")
    '';
}
