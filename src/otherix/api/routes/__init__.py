"""HTTP routes: parse (pydantic), authorise (a guard dependency), call one
service function, return a view model. No SQL and no business rules here."""
