with

source as (

    select * from {{ source('movielens', 'ratings') }}

),

renamed as (

    select
        cast(user_id as integer) as user_id,
        cast(movie_id as integer) as movie_id,
        cast(rating as numeric(2, 1)) as rating,
        cast(rated_at_epoch as bigint) as rated_at_epoch,
        {{ epoch_to_timestamp('rated_at_epoch') }} as rated_at

    from source

)

select * from renamed
