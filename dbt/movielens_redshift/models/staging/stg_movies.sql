{#
    The release year is the 4-digit year in parentheses at the end of the
    title: `Toy Story (1995)`, `Runaway Brain (1995) ` (trailing space),
    `Death Note: Desu nôto (2006–2007)` (a range: the first year is kept).
    Titles without it (e.g. `Babylon 5`) get a null year.
    Patterns avoid backslashes (see macros/regexp_extract.sql); the range
    separator is `[^0-9)]+` rather than `.` so it matches the multi-byte en
    dash whether the engine counts bytes or characters.
#}
{%- set year_suffix = '[(]([0-9]{4})([^0-9)]+[0-9]{4})?[)][[:space:]]*$' -%}

with

source as (

    select * from {{ source('movielens', 'movies') }}

),

renamed as (

    select
        cast(movie_id as integer) as movie_id,
        title as raw_title,
        trim(
            regexp_replace(title, '[[:space:]]*{{ year_suffix }}', '')
        ) as title,
        cast({{ regexp_extract('title', year_suffix) }} as integer) as release_year,
        genres,
        case
            when genres = '(no genres listed)' then 0
            else {{ dbt.length('genres') }} - {{ dbt.length("replace(genres, '|', '')") }} + 1
        end as genre_count

    from source

)

select * from renamed
