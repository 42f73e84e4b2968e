//! The Dockerfile frontend: parser, word expansion, typed instructions, stage graph, `.dockerignore` matching and lint findings.
