"""Stand-ins for dbt's cross-database macros (dbt.*) so sqlfluff's jinja
templater can render the models without a dbt connection. Lint only."""


def dateadd(datepart, interval, from_date_or_timestamp):
    return f"dateadd({datepart}, {interval}, {from_date_or_timestamp})"


def datediff(first_date, second_date, datepart):
    return f"datediff({datepart}, {first_date}, {second_date})"


def split_part(string_text, delimiter_text, part_number):
    return f"split_part({string_text}, {delimiter_text}, {part_number})"


def length(expression):
    return f"length({expression})"


def date_trunc(datepart, date):
    return f"date_trunc('{datepart}', {date})"


def current_timestamp():
    return "current_timestamp"
