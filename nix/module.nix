# nixosModules.default: configure a host as one node of a natslab topology, from the directory
# `natslab render TOPOLOGY --format nixos --out DIR` wrote. Production hosts and the VM tests use the same
# rendered files; they differ in where the secrets come from (`secretsDir`).
#
# The config nats-server reads is the one the services.nats module renders from its settings, with the
# secrets it would otherwise carry inline (a leaf link's password) filled in from the secrets directory
# when the service starts, into /run/natslab-nats: the store copy holds placeholders only.
{ config, lib, pkgs, ... }:
let
  cfg = config.services.natslab-node;
  wiring = import ../nixos-tests/lib.nix;
  t = wiring.load cfg.rendered;
  n = wiring.node t cfg.node;
  conf = "/run/natslab-nats/nats.conf";
  # What the module renders (`format.generate "nats.conf" cfg.settings`), placeholders and all.
  template = (pkgs.formats.json { }).generate "nats.conf" config.services.nats.settings;
  assemble = pkgs.writeShellScript "natslab-nats-config" ''
    set -eu
    install -m 0400 -o ${config.services.nats.user} -g ${config.services.nats.group} ${template} ${conf}
    ${wiring.fillIn t cfg.node cfg.secretsDir conf "${pkgs.replace-secret}/bin/replace-secret"}
  '';
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
    secretsDir = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/secrets/natslab";
      description = ''
        Where this host's secrets are at run time: the files listed in the rendering's `nodes.json`
        (`secret_files`), readable by the nats user, put there by sops-nix, agenix or the like. `null` delivers
        them from the rendered directory through the Nix store, which is world-readable: for test VMs only.
      '';
    };
    natsPackages = lib.mkOption {
      type = lib.types.attrsOf lib.types.package;
      default = { ${pkgs.nats-server.version} = pkgs.nats-server; };
      defaultText = lib.literalExpression ''{ ''${pkgs.nats-server.version} = pkgs.nats-server; }'';
      description = ''
        nats-server builds by version. A node whose topology declares `server_version` runs the build of
        that version from here (evaluation stops, naming the node and version, where there is none); other
        nodes run services.nats.package.
      '';
    };
    package = lib.mkOption {
      type = lib.types.nullOr lib.types.package;
      default = null;
      description = "The natslab package, for the provisioning unit (the flake's module sets it).";
    };
    provision = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = n.provisions;
        defaultText = lib.literalExpression "whether the rendering says this node creates streams";
        description = ''
          Run `natslab provision` for this node as a oneshot unit after nats.service: create the streams and
          consumers the topology declares here, idempotently (what exists as declared is left alone; drift
          is reported, not overwritten).
        '';
      };
      inventory = lib.mkOption {
        type = lib.types.str;
        default = "${cfg.rendered}/inventory.json";
        defaultText = lib.literalExpression ''"''${rendered}/inventory.json"'';
        description = ''
          The inventory `natslab provision` reads. It holds the seed the harness's own credentials derive
          from: on production hosts point this at a runtime path too (with `secretsDir`).
        '';
      };
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    (wiring.nodeConfig t cfg.node { secrets = cfg.secretsDir; inherit (cfg) natsPackages; })
    {
      systemd.services.nats.serviceConfig = {
        RuntimeDirectory = "natslab-nats";
        RuntimeDirectoryMode = "0700";
        # `+`: as root, outside the sandbox, so it can read secrets only root may read.
        ExecStartPre = [ "+${assemble}" ];
        # The module's own package option: natsPackages sets it where the node declares a version.
        ExecStart = lib.mkForce "${config.services.nats.package}/bin/nats-server -c ${conf}";
      };
    }
    (lib.mkIf cfg.provision.enable {
      assertions = [{ assertion = cfg.package != null; message = "services.natslab-node.provision needs services.natslab-node.package"; }];
      systemd.services.natslab-provision = {
        description = "Create the JetStream streams and consumers natslab declares for ${cfg.node}";
        after = [ "nats.service" ];
        requires = [ "nats.service" ];
        wantedBy = [ "multi-user.target" ];
        environment.NATS_SERVER_BIN = "${config.services.nats.package}/bin/nats-server";
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          # The cluster may still be electing: natslab provision waits up to --timeout, then the unit retries.
          Restart = "on-failure";
          RestartSec = 2;
          ExecStart = "${cfg.package}/bin/natslab provision --inventory ${cfg.provision.inventory} --node ${cfg.node} --timeout 120";
        };
      };
    })
  ]);
}
