# One NixOS VM test for one topology: a VM per hub and leaf running the real services.nats module with the
# settings natslab rendered for it (each host provisioning its own streams), plus a `lab` VM that checks them
# through the attached backend.
{ pkgs, natslab, name, rendered, natsPackages ? { } }:
let
  lib' = import ./lib.nix;
  t = lib'.load rendered;
in
pkgs.testers.runNixOSTest {
  name = "natslab-${name}";
  # The driver's own kill timer; the script keeps natslab run well inside it (lib.nix `timeouts`).
  globalTimeout = lib'.timeouts.global;
  meta.timeout = lib'.timeouts.global;
  # Each node VM uses nixosModules.default, exactly as a production host would.
  nodes = builtins.listToAttrs (map
    (n: {
      name = n.name;
      value = {
        imports = [ ../nix/module.nix ];
        services.natslab-node = { enable = true; inherit rendered; node = n.name; package = natslab; };
        services.natslab-node.natsPackages = natsPackages;
        virtualisation.memorySize = 768;
      };
    })
    t.nodes) // {
    lab = {
      environment.systemPackages = [ natslab pkgs.nats-server ];
      environment.variables.NATS_SERVER_BIN = "${pkgs.nats-server}/bin/nats-server";
      environment.etc = lib'.secretFiles t "root" // {
        "natslab/inventory.json".source = rendered + "/inventory.json";
      };
      virtualisation.memorySize = 1024;
    };
  };
  testScript = lib'.testScript t;
}
