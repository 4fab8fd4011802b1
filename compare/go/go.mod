module idgate/compare/go

go 1.19
