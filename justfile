# Converge tasks. Each recipe is one line of plain cargo, so nothing here is required to build.

# Run every test (the README's test command).
test:
    cargo test --workspace --doc && cargo nextest run --workspace

# Format, lint and test, exactly as CI does.
ci:
    bash .ci/run

# Engine benchmarks (merge throughput, a cycle with 1,000 agents); results go in BENCHMARKS.md.
bench:
    cargo bench -p converge-engine --bench engine

# Rewrite the expectations of the data-driven cases after an intended change.
bless:
    UPDATE_EXPECT=1 cargo nextest run -p converge-tests cases
