{#
    The integers 1 to 100: a numbers table for exploding delimited lists
    with split_part (Redshift has no generate_series on compute nodes and no
    unnest). Built from two digits cross joined, stored as a table so that
    Redshift joins it on the compute nodes (distributed to every node).
#}
with

digits as (

    select 0 as digit
    union all
    select 1
    union all
    select 2
    union all
    select 3
    union all
    select 4
    union all
    select 5
    union all
    select 6
    union all
    select 7
    union all
    select 8
    union all
    select 9

),

numbers as (

    select tens.digit * 10 + units.digit + 1 as n
    from digits as tens
    cross join digits as units

)

select n from numbers
