// tern-load: an HTTP load generator that measures latency honestly (issue 5). See LoadCommand for the flags,
// LoadRun for the process and LoadClient for the engine on each reactor.
LoadCommand.main()
