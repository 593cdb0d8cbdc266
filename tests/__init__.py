import os

# The tests fork subprocesses (a test-owned PostgreSQL, `serve`, the CLI) while gRPC threads are
# busy in the same process. gRPC's fork handlers then print "skipping fork() handlers" and, now
# and then, the child dies of SIGSEGV before exec (seen: a restarted PostgreSQL "exit -11").
# Every child here execs at once and uses no gRPC state of ours, so the handlers are not needed.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
