# One VM test per topology in ../topologies: a new topology file gets its test once its rendering is
# committed under ./rendered (`natslab render topologies/X.yaml --format nixos --out nixos-tests/rendered/X`;
# a cargo test fails when a rendering is missing or has drifted).
#
# A topology that declares nats-server versions (mixed-versions) gets its test only where a build of each
# is given in `natsPackages` (nixpkgs has one version); the others are left out, and the evaluation says so.
{ pkgs, natslab, natsPackages ? { } }:
let
  lib' = import ./lib.nix;
  files = builtins.attrNames (builtins.readDir ../topologies);
  yaml = builtins.filter (f: builtins.match ".*\\.yaml" f != null) files;
  names = map (f: builtins.head (builtins.match "(.*)\\.yaml" f)) yaml;
  builds = { ${pkgs.nats-server.version} = pkgs.nats-server; } // natsPackages;
  testable = name:
    let ok = lib'.buildable (lib'.load (./rendered + "/${name}")) builds; in
    if ok then true
    else builtins.trace "natslab: no VM test for ${name}: it declares nats-server versions with no build here (pass natsPackages)" false;
in
builtins.listToAttrs (map
  (name: {
    name = "vm-${name}";
    value = import ./topology-test.nix { inherit pkgs natslab name; rendered = ./rendered + "/${name}"; natsPackages = builds; };
  })
  (builtins.filter testable names))
