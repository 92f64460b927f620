# One VM test per topology in ../topologies: a new topology file gets its test once its rendering is
# committed under ./rendered (`natslab render topologies/X.yaml --format nixos --out nixos-tests/rendered/X`;
# a cargo test fails when a rendering is missing or has drifted).
{ pkgs, natslab }:
let
  files = builtins.attrNames (builtins.readDir ../topologies);
  yaml = builtins.filter (f: builtins.match ".*\\.yaml" f != null) files;
  names = map (f: builtins.head (builtins.match "(.*)\\.yaml" f)) yaml;
in
builtins.listToAttrs (map
  (name: {
    name = "vm-${name}";
    value = import ./topology-test.nix { inherit pkgs natslab name; rendered = ./rendered + "/${name}"; };
  })
  names)
