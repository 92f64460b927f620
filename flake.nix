{
  description = "natslab: declare NATS hub/leaf topologies, bring them up for real, break them, prove what they promise";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (system: pkgs: {
        natslab = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${system}.natslab;
      });

      # nix run . -- run topologies/cim-reference.yaml
      apps = forAll (system: _pkgs: {
        default = { type = "app"; program = "${self.packages.${system}.natslab}/bin/natslab"; };
      });

      devShells = forAll (_system: pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.cargo
            pkgs.rustc
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.nats-server
            pkgs.natscli
            pkgs.python3
            pkgs.nftables
            pkgs.iproute2
            pkgs.deadnix
          ];
          NATS_SERVER_BIN = "${pkgs.nats-server}/bin/nats-server";
        };
      });

      # A host as one node of a topology: services.nats with the settings natslab rendered for it, and the
      # unit that provisions its streams with this flake's natslab.
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./nix/module.nix ];
        services.natslab-node.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.natslab;
      };

      # The harness (its check phase runs the process-backend tests) and one VM test per topology.
      checks = forAll (system: pkgs:
        { natslab = self.packages.${system}.natslab; }
        // import ./nixos-tests { inherit pkgs; natslab = self.packages.${system}.natslab; });
    };
}
