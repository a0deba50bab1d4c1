//! The input parsers of the `runstore` command-line tool, in a library of
//! their own so that the fuzz targets and tests reach them; the `runstore`
//! binary (`src/main.rs`) is the tool itself.

pub mod input;

#[doc(hidden)]
pub mod fuzzing;
