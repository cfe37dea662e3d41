//! The `mpcp-pa` binary: the command line of [`mpcp_pa::cli`].

/// mimalloc instead of the system allocator: the request path allocates many small objects
/// on several threads (JSON values, sled nodes, HTTP buffers), where glibc's malloc spent
/// about a sixth of the service's own CPU per grant (benches/api_throughput.rs, which uses
/// the same allocator so that it measures the service as shipped).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    mpcp_pa::cli::main()
}
