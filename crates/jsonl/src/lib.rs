//! JSON-lines files backend of runstore: the reference semantics and the embedded default
