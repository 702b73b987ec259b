with

source as (

    select * from {{ source('movielens', 'tags') }}

),

renamed as (

    select
        cast(user_id as integer) as user_id,
        cast(movie_id as integer) as movie_id,
        -- TAG is a Redshift reserved word ("Reserved words", Redshift Database Developer
        -- Guide): the replicated column is quoted and the trimmed tag gets a name of its own.
        trim(source."tag") as tag_text,
        lower(trim(source."tag")) as tag_normalized,
        cast(tagged_at_epoch as bigint) as tagged_at_epoch,
        {{ epoch_to_timestamp('tagged_at_epoch') }} as tagged_at

    from source

)

select * from renamed
