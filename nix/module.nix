# nixosModules.default: configure a host as one node of a natslab topology, from the directory
# `natslab render TOPOLOGY --format nixos --out DIR` wrote. Production hosts and the VM tests use the same
# rendered files (secrets included: for production, render with your own seed and keep DIR secret).
{ config, lib, ... }:
let
  cfg = config.services.natslab-node;
  wiring = import ../nixos-tests/lib.nix;
  t = wiring.load cfg.rendered;
in
{
  options.services.natslab-node = {
    enable = lib.mkEnableOption "a NATS server configured as one node of a natslab topology";
    rendered = lib.mkOption {
      type = lib.types.path;
      description = "Directory written by `natslab render TOPOLOGY --format nixos`.";
    };
    node = lib.mkOption {
      type = lib.types.str;
      example = "hub-1";
      description = "Which node of the topology this host is.";
    };
  };

  config = lib.mkIf cfg.enable (wiring.nodeConfig t cfg.node);
}
