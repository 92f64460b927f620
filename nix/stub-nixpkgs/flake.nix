# A stand-in for nixpkgs, for checking the flake's shape offline (`nix flake check --no-build --offline
# --override-input nixpkgs path:./nix/stub-nixpkgs`). It provides only what flake.nix, nix/package.nix and
# nixos-tests/ use; derivations are never built. runNixOSTest records its nodes and test script so CI can
# check the generated Python against the machines that exist.
{
  outputs = _:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
      drv = system: name: extra: derivation ({ inherit name system; builder = "/bin/sh"; args = [ "-c" "echo stub > $out" ]; } // extra);
      lib = {
        inherit genAttrs;
        cleanSource = p: p;
        licenses.asl20 = { spdxId = "Apache-2.0"; };
      };
      pkgsFor = system:
        let
          pkg = name: drv system name { };
          pkgs = {
            inherit lib system;
            callPackage = path: args: let f = import path; in f (builtins.intersectAttrs (builtins.functionArgs f) (pkgs // args));
            rustPlatform.buildRustPackage = a:
              assert builtins.pathExists a.cargoLock.lockFile;
              drv system "${a.pname}-${a.version}" { };
            mkShell = a: drv system "devshell" { packages = map (p: p.name) a.packages; };
            testers.runNixOSTest = t:
              (drv system t.name { testScript = t.testScript; machines = builtins.attrNames t.nodes; })
              // { inherit (t) nodes testScript; };
            nats-server = pkg "nats-server" // { version = "0.0.0-stub"; };
          } // genAttrs [ "natscli" "python3" "cargo" "rustc" "clippy" "rustfmt" "rust-analyzer" "nftables" "iproute2" "deadnix" ] pkg;
        in
        pkgs;
    in
    {
      inherit lib;
      legacyPackages = genAttrs systems pkgsFor;
    };
}
