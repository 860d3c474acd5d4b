// Configuration for `hardhat node`, used only by the ledger's external-chain
// integration test (crates/ledger/tests/it/hardhat.rs). Nothing is compiled
// here: the test deploys the committed artifacts through the Rust client.
// CommonJS because package.json declares an ES module package and hardhat 2
// loads its config with require().
module.exports = {
  // Contracts are built by ../build.mjs; point sources at an empty folder so
  // hardhat never tries to compile anything.
  paths: { sources: "./no-sources", cache: "./.cache", artifacts: "./.artifacts" },
  networks: {
    hardhat: {
      // Same fork rules as the embedded chain.
      hardfork: "cancun",
      // The default "test test … junk" mnemonic, the same dev accounts as the
      // embedded chain (crates/ledger/src/accounts.rs).
      accounts: { mnemonic: "test test test test test test test test test test test junk", count: 10 },
    },
  },
};
