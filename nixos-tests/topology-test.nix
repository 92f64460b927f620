# One NixOS VM test for one topology: a VM per hub and leaf running the real services.nats module with the
# settings natslab rendered for it, plus a `lab` VM that runs the scenarios through the attached backend.
{ pkgs, natslab, name, rendered }:
let
  lib' = import ./lib.nix;
  t = lib'.load rendered;
in
pkgs.testers.runNixOSTest {
  name = "natslab-${name}";
  # Each node VM uses nixosModules.default, exactly as a production host would.
  nodes = builtins.listToAttrs (map
    (n: {
      name = n.name;
      value = {
        imports = [ ../nix/module.nix ];
        services.natslab-node = { enable = true; inherit rendered; node = n.name; };
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
