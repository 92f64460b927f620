# The harness, built from Cargo.lock. The check phase runs the tests against the real nats-server from
# nixpkgs (NATS_SERVER_BIN: nothing is downloaded); tests that need Docker or root say they skip.
{ lib, rustPlatform, nats-server, python3 }:

rustPlatform.buildRustPackage {
  pname = "natslab";
  version = "0.1.0";

  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;

  nativeCheckInputs = [ nats-server python3 ];

  preCheck = ''
    export NATS_SERVER_BIN=${nats-server}/bin/nats-server
    export HOME=$TMPDIR
    export NATSLAB_RUNS=$TMPDIR/natslab-runs
    export NATSLAB_SLOT_DIR=$TMPDIR/natslab-slots
  '';
  # Labs start several servers each: keep test parallelism modest on builders.
  dontUseCargoParallelTests = true;

  meta = {
    description = "Test harness for NATS hub/leaf topologies";
    license = lib.licenses.asl20;
    mainProgram = "natslab";
  };
}
